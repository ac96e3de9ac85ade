"""Jobs: create and cancel (API); claim, heartbeat, progress and outcome (worker).

Statuses: queued → running → succeeded | failed | cancelled, with cancelling between running and
cancelled. Every change is a conditional UPDATE, so terminal states never change and a duplicate
delivery of the same job claims nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from contract.families import family_of_api_name
from core.enums import BaseModelStatus, JobStatus
from core.errors import ConflictError, InvalidError
from core.hyperparameters import job_hyperparameters
from core.ids import new_id
from core.services import idempotency, job_events
from core.services.common import owned, referenced
from core.services.pagination import Page, paginate
from core.tables import Dataset, Job, RegisteredModel, utcnow

SCOPE = "jobs"
ON_WORKER = JobStatus.on_worker()


def get(session: Session, *, tenant_id: str, job_id: str) -> Job:
    """The tenant's job, or ``NotFoundError``."""
    return owned(session, Job, job_id, tenant_id=tenant_id, kind="job")


def list_page(
    session: Session, *, tenant_id: str, status: str | None = None, limit: int = 20, after: str | None = None
) -> Page[Job]:
    """The tenant's jobs, newest first, optionally of one status."""
    stmt = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    return paginate(session, stmt, key=Job.id, limit=limit, after=after)


def create(
    session: Session,
    *,
    tenant_id: str,
    base_model_id: str,
    dataset_id: str,
    method: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    validation_labels: list[int] | None = None,
    validation_prompts: list[str] | None = None,
    seed: int | None = None,
    metadata: dict[str, str] | None = None,
    gpus: int = 1,
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> Job:
    """Validate and commit a ``queued`` job (the caller enqueues it afterwards).

    Everything the worker would reject is a 422 here (``core.hyperparameters.job_hyperparameters``);
    the stored hyperparameters are the complete TrainConfig the worker runs.
    """
    request = idempotency.Request(session, tenant_id, SCOPE, idempotency_key, fingerprint)
    if earlier := request.earlier():
        return get(session, tenant_id=tenant_id, job_id=earlier)
    model = referenced(session, RegisteredModel, base_model_id, tenant_id=tenant_id, kind="base model",
                       field="base_model")
    if model.status == BaseModelStatus.FAILED:
        raise InvalidError.field("base_model", f"{model.id} failed its load check: {model.error}")
    dataset = referenced(session, Dataset, dataset_id, tenant_id=tenant_id, kind="dataset", field="dataset")
    config = job_hyperparameters(
        hyperparameters or {}, family=family_of_api_name(model.family), base_model_id=model.id, dataset=dataset,
        base_image_size=model.image_size, gpus=gpus, method=method, seed=seed, validation_labels=validation_labels,
        validation_prompts=validation_prompts)
    job = Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        base_model_id=model.id,
        dataset_id=dataset.id,
        method=config["method"],
        status=JobStatus.QUEUED,
        hyperparameters=config,
        validation_prompts=config["validation_prompts"],
        seed=config["seed"],
        metadata_=metadata or {},
        resources={"gpus": gpus},
        total_steps=config["max_steps"],
    )
    return insert(session, job, request)


def insert(session: Session, job: Job, request: idempotency.Request) -> Job:
    """Commit a new ``queued`` job with its first event and idempotency record (a concurrent
    request with the same key wins: its job is returned instead)."""
    session.add(job)
    session.flush()
    job_events.add(session, job_id=job.id, type="status", message="job queued")
    return get(session, tenant_id=job.tenant_id, job_id=request.commit(job.id))


def _transition(
    session: Session, job_id: str, sources: tuple[str, ...], target: str, message: str, *, where=(), **values
) -> bool:
    """Move a job from one of ``sources`` to ``target`` and log it; False when it was elsewhere."""
    if target in JobStatus.terminal():
        values.setdefault("finished_at", utcnow())
    stmt = (
        update(Job).where(Job.id == job_id, Job.status.in_(sources), *where).values(status=target, **values)
    )
    changed = session.execute(stmt).rowcount == 1
    if changed:
        level = "error" if target == JobStatus.FAILED else "info"
        job_events.add(session, job_id=job_id, type="status", level=level, message=message)
    session.commit()
    return changed


def cancel(session: Session, *, tenant_id: str, job_id: str) -> Job:
    """Cancel a queued job at once, or ask a running one to stop (again while ``cancelling``); a
    finished job, cancelled ones included, cannot be cancelled (409)."""
    job = get(session, tenant_id=tenant_id, job_id=job_id)
    if job.status in JobStatus.terminal():
        raise ConflictError(f"job {job_id} already {job.status}; it cannot be cancelled")
    if not _transition(session, job_id, (JobStatus.QUEUED,), JobStatus.CANCELLED, "job cancelled before it started"):
        _transition(session, job_id, (JobStatus.RUNNING,), JobStatus.CANCELLING, "cancellation requested")
    session.refresh(job)
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):  # it finished while we asked
        raise ConflictError(f"job {job_id} already {job.status}; it cannot be cancelled")
    return job


# --- worker side ------------------------------------------------------------------------------


def claim(session: Session, *, job_id: str, worker: str) -> Job | None:
    """Take a queued job for ``worker``; None when it is not queued (already claimed, cancelled…)."""
    now = utcnow()
    values = {"worker": worker, "heartbeat_at": now, "attempts": Job.attempts + 1, "error": None}
    if not _transition(session, job_id, (JobStatus.QUEUED,), JobStatus.RUNNING, f"claimed by {worker}", **values):
        return None
    session.execute(update(Job).where(Job.id == job_id, Job.started_at.is_(None)).values(started_at=now))
    session.commit()
    return session.get(Job, job_id, populate_existing=True)


def heartbeat(session: Session, *, job_id: str) -> str | None:
    """Prove the worker is alive; return the job's status (``cancelling`` means stop)."""
    session.execute(update(Job).where(Job.id == job_id, Job.status.in_(ON_WORKER)).values(heartbeat_at=utcnow()))
    session.commit()
    return session.scalar(select(Job.status).where(Job.id == job_id))


def update_progress(
    session: Session,
    *,
    job_id: str,
    step: int,
    total_steps: int | None = None,
    eta_seconds: float | None = None,
    metrics: dict[str, Any] | None = None,
    message: str | None = None,
) -> str | None:
    """Record progress (and a heartbeat), optionally with an event; return the job's status."""
    now = utcnow()
    values: dict[str, Any] = {"step": step, "heartbeat_at": now}
    if total_steps is not None:
        values["total_steps"] = total_steps
    if eta_seconds is not None:
        values["eta_at"] = now + timedelta(seconds=eta_seconds)
    if metrics is not None:
        values["metrics"] = metrics
    session.execute(update(Job).where(Job.id == job_id, Job.status.in_(ON_WORKER)).values(**values))
    if message:
        job_events.add(
            session, job_id=job_id, type="progress", message=message, data={"step": step, **(metrics or {})}
        )
    session.commit()
    return session.scalar(select(Job.status).where(Job.id == job_id))


def mark_succeeded(session: Session, *, job_id: str, metrics: dict[str, Any] | None = None) -> bool:
    """The run finished; False when the job had already ended."""
    values = {"metrics": metrics} if metrics is not None else {}
    return _transition(session, job_id, ON_WORKER, JobStatus.SUCCEEDED, "job succeeded", eta_at=None, **values)


def mark_failed(session: Session, *, job_id: str, error: str) -> bool:
    """The run failed with ``error`` (shown to the user); False when the job had already ended."""
    sources = JobStatus.unfinished()
    return _transition(session, job_id, sources, JobStatus.FAILED, f"job failed: {error}", error=error, eta_at=None)


def mark_cancelled(session: Session, *, job_id: str) -> bool:
    """The run stopped on request (its last checkpoint is kept); False when it had already ended."""
    return _transition(session, job_id, JobStatus.unfinished(), JobStatus.CANCELLED, "job cancelled", eta_at=None)


def release(session: Session, *, job_id: str, reason: str) -> bool:
    """Give a running job back to the queue (a transient failure the task will retry)."""
    return _transition(session, job_id, (JobStatus.RUNNING,), JobStatus.QUEUED, reason, worker=None)


def requeue_stale(session: Session, *, older_than: timedelta, max_attempts: int = 3) -> list[str]:
    """Requeue jobs whose worker stopped heartbeating; return the ids to enqueue again.

    A stale ``cancelling`` job becomes ``cancelled``; one that has used ``max_attempts`` fails.
    """
    cutoff = utcnow() - older_than
    stale = session.execute(
        select(Job.id, Job.status, Job.attempts).where(Job.status.in_(ON_WORKER), Job.heartbeat_at < cutoff)
    ).all()
    requeued = []
    for job_id, status, attempts in stale:
        if status == JobStatus.CANCELLING:
            mark_cancelled(session, job_id=job_id)
        elif attempts >= max_attempts:
            mark_failed(session, job_id=job_id, error=f"worker lost {attempts} times; giving up")
        elif _transition(
            session,
            job_id,
            (JobStatus.RUNNING,),
            JobStatus.QUEUED,
            "worker lost; job requeued",
            where=(Job.heartbeat_at < cutoff,),
            worker=None,
        ):
            requeued.append(job_id)
    return requeued
