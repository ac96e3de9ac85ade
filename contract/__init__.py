"""The contract shared by the service and the training library: what a job may ask for.

Pure: imports pydantic and yaml only, so ``core`` (no torch) and ``models`` (torch) validate the
same ``TrainConfig`` with the same cross-field rules, and name model families from one registry.
"""
