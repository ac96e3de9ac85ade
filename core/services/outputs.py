"""Checkpoints and sample grids a job published, at fixed keys (a rerun updates, never duplicates).

The writes stage in the caller's transaction (with the job's webhook deliveries of them): the worker
commits them under its lease."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.ids import new_id
from core.services import webhooks
from core.services.pagination import Page, paginate
from core.storage.keys import checkpoint_prefix, sample_key
from core.tables import Checkpoint, Sample


def _upsert(session: Session, model: type, kind: str, job_id: str, step: int, **values: Any):
    row = session.scalar(select(model).where(model.job_id == job_id, model.step == step))
    if row is None:
        row = model(id=new_id(kind), job_id=job_id, step=step)
        session.add(row)
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return row


def create_checkpoint(
    session: Session, *, job_id: str, step: int, metrics: dict[str, Any] | None = None
) -> Checkpoint:
    """Stage the record of the checkpoint published at ``step``."""
    prefix = checkpoint_prefix(job_id, step)
    row = _upsert(session, Checkpoint, "checkpoint", job_id, step, storage_prefix=prefix, metrics=metrics)
    webhooks.emit(session, job_id=job_id, event="job.checkpoint", data={"checkpoint": {"id": row.id, "step": step}})
    return row


def delete_checkpoint(session: Session, *, job_id: str, step: int) -> None:
    """Forget a checkpoint the worker pruned."""
    session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step))


def list_checkpoints(
    session: Session, *, job_id: str, limit: int = 20, after: str | None = None
) -> Page[Checkpoint]:
    """A job's checkpoints, oldest first."""
    stmt = select(Checkpoint).where(Checkpoint.job_id == job_id)
    return paginate(session, stmt, key=Checkpoint.id, limit=limit, after=after, newest_first=False)


def checkpoint_steps(session: Session, *, job_id: str) -> list[int]:
    """Every step a job published a checkpoint at, ascending (all of them, not a page)."""
    return list(session.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)))


def create_sample(session: Session, *, job_id: str, step: int) -> Sample:
    """Stage the record of the sample grid published at ``step``."""
    row = _upsert(session, Sample, "sample", job_id, step, storage_key=sample_key(job_id, step))
    webhooks.emit(session, job_id=job_id, event="job.sample", data={"sample": {"id": row.id, "step": step}})
    return row


def list_samples(session: Session, *, job_id: str, limit: int = 20, after: str | None = None) -> Page[Sample]:
    """A job's sample grids, oldest first."""
    stmt = select(Sample).where(Sample.job_id == job_id)
    return paginate(session, stmt, key=Sample.id, limit=limit, after=after, newest_first=False)
