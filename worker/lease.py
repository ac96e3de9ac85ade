"""A worker's lease on the job it claimed: the claiming attempt, renewed by heartbeats.

Every write of the worker goes through the lease (``core.services.jobs.hold``): once another attempt
holds the job, or it ended, nothing more is written. The lease is also known locally: the reaper may
requeue a job only when its heartbeat is older than ``heartbeat_timeout``, so a worker whose last
successful renewal is younger than that (minus a margin) still holds it without asking the database.
A worker that was paused (SIGSTOP, a stalled VM) finds its local lease expired, asks once, and stops.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from core.enums import JobStatus
from core.services import job_metrics, jobs
from worker.context import WorkerContext

log = logging.getLogger(__name__)
SAFETY = 0.5  # trust the local lease for half the heartbeat timeout, then ask the database


class Lease:
    """The attempt that claimed ``job_id``; thread-safe. ``lost`` is final."""

    def __init__(self, ctx: WorkerContext, job_id: str, attempt: int, *, timeout: float | None = None):
        self.ctx, self.job_id, self.attempt = ctx, job_id, attempt
        self.timeout = float(timeout if timeout is not None else ctx.settings.heartbeat_timeout)
        self.status: str | None = JobStatus.RUNNING
        self.lost = False
        self._renewed = time.monotonic()
        self._lock = threading.Lock()

    def _answer(self, status: str | None) -> bool:
        """Record what a fenced write answered; False once the lease is lost."""
        with self._lock:
            if status is None:
                if not self.lost:
                    log.warning("job %s: attempt %d lost its lease (requeued, claimed again or ended); "
                                "stopping without writing more", self.job_id, self.attempt)
                self.lost = True
            elif not self.lost:
                self.status, self._renewed = status, time.monotonic()
            return not self.lost

    def renew(self) -> bool:
        """Heartbeat; False when the lease is lost."""
        if self.lost:
            return False
        with self.ctx.sessions() as session:
            return self._answer(jobs.heartbeat(session, job_id=self.job_id, attempt=self.attempt))

    def held(self) -> bool:
        """Whether this attempt still holds the job: locally while the last renewal is recent, else
        by renewing (so a paused worker learns it was replaced before it writes anything)."""
        if self.lost:
            return False
        if time.monotonic() - self._renewed < self.timeout * SAFETY:
            return True
        return self.renew()

    def should_stop(self) -> bool:
        """Stop training: the lease is lost or the user asked to cancel."""
        return not self.held() or self.status == JobStatus.CANCELLING

    def event(self, message: str, **data: Any) -> bool:
        """Log a message on the job's events; False (nothing written) when the lease is lost."""
        if not self.held():
            return False
        with self.ctx.sessions() as session:
            return self._answer(jobs.record_event(session, job_id=self.job_id, attempt=self.attempt,
                                                  message=message, data=data or None))

    def progress(self, **values: Any) -> bool:
        """Record progress (``jobs.update_progress`` keywords); False when the lease is lost."""
        if self.lost:
            return False
        with self.ctx.sessions() as session:
            return self._answer(jobs.update_progress(session, job_id=self.job_id, attempt=self.attempt, **values))

    def record_metrics(self, step: int, figures: dict[str, Any]) -> bool:
        """Add a step to the job's metrics history while this attempt holds the job (no renewal, no job-row
        lock: written every logged step, it must never hold the row a requeue needs)."""
        if self.lost:
            return False
        with self.ctx.sessions() as session:
            written = job_metrics.record(session, job_id=self.job_id, step=step, figures=figures, attempt=self.attempt)
            session.commit()
            return written

    def write(self, stage) -> bool:
        """Run ``stage(session)`` in one transaction with a renewal, committing only while held
        (the job row stays locked until the commit, so the requeue cannot interleave)."""
        if self.lost:
            return False
        with self.ctx.sessions() as session:
            held = self._answer(jobs.hold(session, job_id=self.job_id, attempt=self.attempt))
            if held:
                stage(session)
            session.commit()
            return held


class Heartbeat(threading.Thread):
    """Renews a lease every ``interval`` seconds until stopped or lost."""

    def __init__(self, lease: Lease, interval: float):
        super().__init__(name=f"heartbeat-{lease.job_id}", daemon=True)
        self.lease, self.interval = lease, interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                if not self.lease.renew():
                    return
            except Exception:  # noqa: BLE001 - keep beating through database hiccups
                log.exception("heartbeat of %s failed", self.lease.job_id)

    def stop(self) -> None:
        self._stop_event.set()
