"""Thin Celery tasks: each takes an id and delegates."""

from __future__ import annotations

import models.run  # noqa: F401 - load torch and diffusers when the worker starts, not on its first job
from core.storage import StorageError
from worker.app import app
from worker.pipeline import TransientError, run


@app.task(name="worker.tasks.run_job", bind=True, max_retries=3)
def run_job(self, job_id: str) -> str:
    """Run a tuning job end to end; a duplicate delivery claims nothing and returns at once."""
    try:
        return run(job_id)
    except TransientError as err:
        raise self.retry(exc=err, countdown=min(60, 5 * 2**self.request.retries)) from err


@app.task(name="worker.tasks.join_job")
def join_job(job_id: str, attempt: int) -> str:
    """Join attempt ``attempt`` of a multi-node job as one of its hosts (``worker.gang.join``); a join
    that finds no open slot (the gang is full, closed or over) returns at once."""
    from worker.gang import join

    return join(job_id, attempt)


@app.task(name="worker.tasks.requeue_stale")
def requeue_stale() -> list[str]:
    """Requeue jobs whose worker stopped heartbeating (also run by every worker's reaper thread)."""
    from worker.reaper import reap_once

    return reap_once()


@app.task(name="worker.tasks.check_base_model", autoretry_for=(ConnectionError, StorageError), max_retries=3,
          retry_backoff=True)
def check_base_model(base_model_id: str) -> str:
    """Load a newly registered base model once and mark it ready or failed."""
    from worker.checks import check_base_model as check

    return check(base_model_id)
