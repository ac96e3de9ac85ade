"""The service's fixed vocabularies, in one place: job statuses and kinds, base-model statuses.

Members are ``StrEnum``s, so they compare equal to (and are stored as) their string values.
"""

from __future__ import annotations

from enum import StrEnum

from contract.families import DatasetLayout

__all__ = ["BaseModelStatus", "DatasetLayout", "JobKind", "JobStatus"]


class JobStatus(StrEnum):
    """queued → running → succeeded | failed | cancelled, with cancelling between running and cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def terminal(cls) -> tuple[JobStatus, ...]:
        """Statuses that never change again."""
        return (cls.SUCCEEDED, cls.FAILED, cls.CANCELLED)

    @classmethod
    def on_worker(cls) -> tuple[JobStatus, ...]:
        """Statuses in which a worker holds the job (it heartbeats and reports progress)."""
        return (cls.RUNNING, cls.CANCELLING)

    @classmethod
    def unfinished(cls) -> tuple[JobStatus, ...]:
        """Statuses of a job that may still read its inputs (queued or on a worker)."""
        return (cls.QUEUED, cls.RUNNING, cls.CANCELLING)


class JobKind(StrEnum):
    """What a job does: tune a base model, probe a tuned job's chain of forgetting, or measure the memory
    one step of a tuning job would need (``dry_run``)."""

    TUNE = "tune"
    FORGETTING_PROBE = "forgetting_probe"
    MEMORY_PLAN = "memory_plan"


class BaseModelStatus(StrEnum):
    """pending until a worker loads the model once; then ready or failed (with the reason)."""

    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
