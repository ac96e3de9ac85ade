"""The REST API (FastAPI). Imports ``core`` only: no worker, no models, no torch."""
