"""Shared by the API and the worker: settings, database, tables, services, storage, queue.

``core`` imports nothing else of ours (DESIGN.md section 3) and never torch.
"""
