"""Thin Celery tasks: each takes an id and delegates."""

from __future__ import annotations

from worker.app import app


@app.task(name="worker.tasks.run_job", bind=True, max_retries=3)
def run_job(self, job_id: str) -> str:
    """Run a tuning job end to end; a duplicate delivery claims nothing and returns at once."""
    from worker.pipeline import TransientError, run

    try:
        return run(job_id)
    except TransientError as err:
        raise self.retry(exc=err, countdown=min(60, 5 * 2**self.request.retries)) from err


@app.task(name="worker.tasks.requeue_stale")
def requeue_stale() -> list[str]:
    """Requeue jobs whose worker stopped heartbeating (also run by every worker's reaper thread)."""
    from worker.reaper import reap_once

    return reap_once()
