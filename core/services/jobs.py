"""Jobs: create and cancel (API); claim, heartbeat, progress and outcome (worker).

Statuses: queued → running → succeeded | failed | cancelled, with cancelling between running and
cancelled. Every change is a conditional UPDATE, so terminal states never change and a duplicate
delivery of the same job claims nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from contract.families import Resolutions, family_of_api_name
from core.enums import BaseModelStatus, JobKind, JobStatus
from core.errors import ConflictError, InvalidError, QuotaExceeded
from core.hyperparameters import job_hyperparameters
from core.ids import new_id
from core.services import idempotency, job_events, resume, webhooks
from core.services.common import owned, referenced
from core.services.pagination import Page, paginate
from core.tables import Dataset, Job, RegisteredModel, Tenant, utcnow

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
    nodes: int | None = None,
    worker_gpus: int = 8,
    resume_from: str | None = None,
    dry_run: bool = False,
    webhook: dict[str, Any] | None = None,
    max_queued: int | None = None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> Job:
    """Validate and commit a ``queued`` job (starting from ``resume_from``'s last checkpoint when given;
    with ``dry_run``, a ``memory_plan`` job that measures one step of it instead) (the caller enqueues it afterwards); a tenant with
    ``max_queued`` jobs already waiting gets ``QuotaExceeded``.

    Everything the worker would reject is a 422 here (``core.hyperparameters.job_hyperparameters``);
    the stored hyperparameters are the complete TrainConfig the worker runs. ``gpus`` is the job's
    total; it runs on ``nodes`` hosts (``placement``; workers have ``worker_gpus`` each).
    """
    nodes = placement(gpus, nodes, worker_gpus=worker_gpus)
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
        resolutions=model.resolutions and Resolutions(**model.resolutions), gpus=gpus, method=method, seed=seed, validation_labels=validation_labels,
        validation_prompts=validation_prompts)
    start = resume_from and resume.resume_point(session, tenant_id=tenant_id, source_id=resume_from,
                                                base_model_id=model.id, dataset_id=dataset.id, config=config,
                                                gpus=gpus)
    job = Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        kind=JobKind.MEMORY_PLAN if dry_run else JobKind.TUNE,
        base_model_id=model.id,
        dataset_id=dataset.id,
        method=config["method"],
        status=JobStatus.QUEUED,
        hyperparameters=config,
        validation_prompts=config["validation_prompts"],
        seed=config["seed"],
        metadata_=metadata or {},
        resources={"gpus": gpus, **({"nodes": nodes} if nodes > 1 else {})},
        resume_from=start or None,
        webhook=webhook or None,  # {"url", "events"}, checked against the operator's rules by the caller
        total_steps=1 if dry_run else config["max_steps"],
    )
    return insert(session, job, request, max_queued=max_queued)


def placement(gpus: int, nodes: int | None, *, worker_gpus: int) -> int:
    """The hosts a job of ``gpus`` GPUs in all runs on, or a 422 naming ``resources.gpus`` or
    ``resources.nodes``: as many as asked (the GPUs split evenly, no more per host than a worker has),
    else one while the GPUs fit a worker host and whole hosts beyond that."""
    if nodes is None:
        if gpus <= worker_gpus:
            return 1
        if gpus % worker_gpus:
            raise InvalidError.field("resources.gpus", f"{gpus} GPUs do not fill whole hosts of {worker_gpus} GPUs; "
                                     f"ask for a multiple of {worker_gpus}, or say how many hosts in resources.nodes")
        return gpus // worker_gpus
    if gpus % nodes:
        raise InvalidError.field("resources.nodes", f"{gpus} GPUs do not split evenly over {nodes} nodes")
    if gpus // nodes > worker_gpus:
        raise InvalidError.field("resources.nodes", f"{gpus // nodes} GPUs per node, but worker hosts have "
                                 f"{worker_gpus}; ask for at least {-(-gpus // worker_gpus)} nodes")
    return nodes


def check_queued_quota(session: Session, *, tenant_id: str, max_queued: int | None) -> None:
    """``QuotaExceeded`` when the tenant already has ``max_queued`` jobs waiting."""
    if max_queued is None:
        return
    queued = session.scalar(select(func.count()).select_from(Job)
                            .where(Job.tenant_id == tenant_id, Job.status == JobStatus.QUEUED))
    if queued >= max_queued:
        raise QuotaExceeded(f"this tenant already has {queued} queued jobs (the limit is {max_queued}); "
                            "wait for some to start or cancel some", retry_after=60)


def insert(session: Session, job: Job, request: idempotency.Request, *, max_queued: int | None = None) -> Job:
    """Commit a new ``queued`` job with its first event and idempotency record (a concurrent
    request with the same key wins: its job is returned instead); ``QuotaExceeded`` when the
    tenant already has ``max_queued`` jobs waiting."""
    check_queued_quota(session, tenant_id=job.tenant_id, max_queued=max_queued)
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
        if (kind := f"job.{target}") in webhooks.EVENTS:  # running, succeeded, failed, cancelled
            data = {"message": message, **({"error": values.get("error")} if target == JobStatus.FAILED else {})}
            webhooks.emit(session, job_id=job_id, event=kind, data=data)
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
#
# A claim increments ``attempts``; that number is the claiming worker's lease. Every later write of
# the worker is conditional on it (``_held``), so a worker that was paused past the heartbeat timeout,
# whose job was requeued and claimed again, writes nothing: not a beat, progress, event, output row
# or final status.


def _held(job_id: str, attempt: int) -> tuple:
    """WHERE clauses: the job is still on a worker under the lease of ``attempt``."""
    return Job.id == job_id, Job.status.in_(ON_WORKER), Job.attempts == attempt


def claim(session: Session, *, job_id: str, worker: str) -> Job | None:
    """Take a queued job for ``worker``; None when it is not queued (already claimed, cancelled…).

    The returned job's ``attempts`` is the lease every later write of this worker names."""
    now = utcnow()
    values = {"worker": worker, "heartbeat_at": now, "attempts": Job.attempts + 1, "error": None}
    if not _transition(session, job_id, (JobStatus.QUEUED,), JobStatus.RUNNING, f"claimed by {worker}", **values):
        return None
    session.execute(update(Job).where(Job.id == job_id, Job.started_at.is_(None)).values(started_at=now))
    session.commit()
    return session.get(Job, job_id, populate_existing=True)


def _on_worker(tenant_id: str | None = None):
    """Jobs on workers per tenant: ``(tenant_id, n)`` rows, or the count of one tenant."""
    if tenant_id is not None:
        return select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id, Job.status.in_(ON_WORKER))
    return select(Job.tenant_id, func.count().label("n")).where(Job.status.in_(ON_WORKER)).group_by(Job.tenant_id)


def next_in_line(session: Session, *, max_running: int, limit: int = 20) -> list[str]:
    """Queued jobs in the order workers should take them: tenants with the fewest jobs on workers
    first, then the tenant served longest ago (never-served tenants first), each tenant's oldest job
    first; tenants at ``max_running`` wait. So one tenant's backlog cannot starve another's, even
    with one worker that is always free when both wait."""
    running = _on_worker().subquery()
    served = select(Job.tenant_id, func.max(Job.started_at).label("at")).group_by(Job.tenant_id).subquery()
    on_workers = func.coalesce(running.c.n, 0)
    stmt = (select(Job.id)
            .outerjoin(running, running.c.tenant_id == Job.tenant_id)
            .outerjoin(served, served.c.tenant_id == Job.tenant_id)
            .where(Job.status == JobStatus.QUEUED, on_workers < max_running)
            .order_by(on_workers, served.c.at.asc().nulls_first(), Job.id).limit(limit))
    return list(session.scalars(stmt))


def claim_next(session: Session, *, worker: str, max_running: int) -> Job | None:
    """Claim the job that is fairest to run now (``next_in_line``); None when no tenant may run one.

    A queue message is a turn, not a particular job: whichever job a message's turn claims, every
    queued job still has one message waiting, and workers send another when a job ends and its
    tenant has jobs waiting (``waiting``). The tenant's row is locked while its running jobs are
    counted, so concurrent workers do not overshoot ``max_running``."""
    for job_id in next_in_line(session, max_running=max_running):
        tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
        session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
        if session.scalar(_on_worker(tenant_id)) >= max_running:
            session.rollback()
            continue
        job = claim(session, job_id=job_id, worker=worker)
        if job is not None:
            return job
    session.rollback()
    return None


def waiting(session: Session, *, tenant_id: str) -> str | None:
    """The oldest queued job of a tenant, if any (a job of it ended: give the queue a turn for it)."""
    return session.scalar(select(Job.id).where(Job.tenant_id == tenant_id, Job.status == JobStatus.QUEUED)
                          .order_by(Job.id).limit(1))


def hold(session: Session, *, job_id: str, attempt: int, **values: Any) -> str | None:
    """Renew the lease of ``attempt`` (a heartbeat, plus ``values``) in the caller's transaction.

    Returns the job's status (``cancelling`` means stop), or None when the lease is lost: the job was
    requeued, claimed by another attempt or ended. The row stays locked until the caller commits, so
    what the caller adds in that transaction is fenced too."""
    stmt = update(Job).where(*_held(job_id, attempt)).values(heartbeat_at=utcnow(), **values)
    if session.execute(stmt).rowcount != 1:
        return None
    return session.scalar(select(Job.status).where(Job.id == job_id))


def heartbeat(session: Session, *, job_id: str, attempt: int) -> str | None:
    """Prove the worker is alive; the job's status, or None when the lease is lost."""
    status = hold(session, job_id=job_id, attempt=attempt)
    session.commit()
    return status


def record_event(session: Session, *, job_id: str, attempt: int, message: str, data: Any = None) -> str | None:
    """Log a worker message under the lease; the job's status, or None (nothing written) when lost."""
    status = hold(session, job_id=job_id, attempt=attempt)
    if status is not None:
        job_events.add(session, job_id=job_id, message=message, data=data)
    session.commit()
    return status


def update_progress(
    session: Session,
    *,
    job_id: str,
    attempt: int,
    step: int,
    total_steps: int | None = None,
    eta_seconds: float | None = None,
    metrics: dict[str, Any] | None = None,
    message: str | None = None,
) -> str | None:
    """Record progress under the lease, optionally with an event; the job's status, or None when lost."""
    now = utcnow()
    values: dict[str, Any] = {"step": step}
    if total_steps is not None:
        values["total_steps"] = total_steps
    if eta_seconds is not None:
        values["eta_at"] = now + timedelta(seconds=eta_seconds)
    if metrics is not None:
        values["metrics"] = metrics
    status = hold(session, job_id=job_id, attempt=attempt, **values)
    if status is not None and message:
        job_events.add(session, job_id=job_id, type="progress", message=message,
                       data={"step": step, "attempt": attempt, **(metrics or {})})
    session.commit()
    return status


def _outcome_values(step: int | None, metrics: dict[str, Any] | None) -> dict[str, Any]:
    values: dict[str, Any] = {"eta_at": None}
    if step is not None:
        values["step"] = step
    if metrics is not None:
        values["metrics"] = metrics
    return values


def mark_succeeded(session: Session, *, job_id: str, attempt: int, step: int | None = None,
                   metrics: dict[str, Any] | None = None) -> bool:
    """The run of ``attempt`` finished at ``step``; False when the lease was lost or the job had ended."""
    return _transition(session, job_id, ON_WORKER, JobStatus.SUCCEEDED, "job succeeded",
                       where=(Job.attempts == attempt,), **_outcome_values(step, metrics))


def mark_failed(session: Session, *, job_id: str, error: str, attempt: int | None = None) -> bool:
    """The run failed with ``error`` (shown to the user); False when the job had already ended, or
    when ``attempt`` is given and no longer holds the job."""
    where = (Job.attempts == attempt,) if attempt is not None else ()
    return _transition(session, job_id, JobStatus.unfinished(), JobStatus.FAILED, f"job failed: {error}",
                       where=where, error=error, eta_at=None)


def mark_cancelled(session: Session, *, job_id: str, attempt: int | None = None, step: int | None = None) -> bool:
    """The run stopped on request at ``step`` (its last checkpoint is kept); False when it had already
    ended, or when ``attempt`` is given and no longer holds the job."""
    where = (Job.attempts == attempt,) if attempt is not None else ()
    return _transition(session, job_id, JobStatus.unfinished(), JobStatus.CANCELLED, "job cancelled",
                       where=where, **_outcome_values(step, None))


def release(session: Session, *, job_id: str, attempt: int, reason: str) -> bool:
    """Give a running job back to the queue (a transient failure the task will retry, or a worker
    that is shutting down); False when ``attempt`` no longer holds it."""
    return _transition(session, job_id, (JobStatus.RUNNING,), JobStatus.QUEUED, reason,
                       where=(Job.attempts == attempt,), worker=None, eta_at=None)


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
        still_stale = (Job.heartbeat_at < cutoff, Job.attempts == attempts)  # unless it beat meanwhile
        if status == JobStatus.CANCELLING:
            _transition(session, job_id, (JobStatus.CANCELLING,), JobStatus.CANCELLED,
                        "worker lost while cancelling; job cancelled", where=still_stale, eta_at=None)
        elif attempts >= max_attempts:
            error = f"worker lost {attempts} times; giving up"
            _transition(session, job_id, (JobStatus.RUNNING,), JobStatus.FAILED, f"job failed: {error}",
                        where=still_stale, error=error, eta_at=None)
        elif _transition(session, job_id, (JobStatus.RUNNING,), JobStatus.QUEUED, "worker lost; job requeued",
                         where=still_stale, worker=None, eta_at=None):
            requeued.append(job_id)
    return requeued
