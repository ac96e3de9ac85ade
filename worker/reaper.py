"""Find jobs whose worker died (no heartbeat for ``heartbeat_timeout``) and enqueue them again; remove
the node slots (``job_node``) of multi-node attempts that ended without their leader.

Every worker runs this in a daemon thread; concurrent reapers are safe because the requeue is a
conditional UPDATE. The requeued job resumes from its last published checkpoint.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from core.queue import enqueue_job
from core.services import gangs, jobs
from worker.context import context

log = logging.getLogger(__name__)
_stop = threading.Event()
_thread: threading.Thread | None = None


def reap_once() -> list[str]:
    """Requeue stale jobs and send them to the queue again; return their ids."""
    ctx = context()
    with ctx.sessions() as session:
        ids = jobs.requeue_stale(session, older_than=timedelta(seconds=ctx.settings.heartbeat_timeout),
                                 max_attempts=ctx.settings.max_attempts)
        gangs.sweep(session)  # node slots of multi-node attempts that ended without their leader
    for job_id in ids:
        log.warning("job %s lost its worker; requeued", job_id)
        enqueue_job(ctx.producer, job_id)
    return ids


def _loop(interval: float) -> None:
    while not _stop.wait(interval):
        try:
            reap_once()
        except Exception:  # noqa: BLE001 - a reaper must survive database hiccups
            log.exception("stale-job reaper failed; retrying")


def reaper_interval(timeout: float) -> float:
    """Seconds between looks for stale jobs: a dead worker's job waits at most timeout + this."""
    return max(1.0, timeout / 4)


def start_reaper() -> None:
    """Start the reaper thread (every ``reaper_interval`` seconds)."""
    global _thread
    if _thread and _thread.is_alive():
        return
    interval = reaper_interval(context().settings.heartbeat_timeout)
    _stop.clear()
    _thread = threading.Thread(target=_loop, args=(interval,), name="difftune-reaper", daemon=True)
    _thread.start()


def stop_reaper() -> None:
    _stop.set()
