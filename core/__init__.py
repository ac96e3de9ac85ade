"""Shared by the API and the worker: settings, database, tables, services, storage, queue.

``core`` imports only ``contract`` of ours (docs/ARCHITECTURE.md) and never torch.
"""
