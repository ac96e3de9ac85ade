#!/bin/sh
# Migrate the database first (the only place migrations run), then serve the API.
set -eu
python -m migrations
exec uvicorn --factory api.main:app --host 0.0.0.0 --port "${PORT:-8000}" \
  --workers "${API_WORKERS:-2}" --proxy-headers
