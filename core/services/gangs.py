"""Gangs: the hosts of a multi-node job's attempt, as rank slots in ``job_node``.

The worker that claims a job asking for several nodes forms the gang (``form``): it holds node 0 and
opens the others; workers that take the job's join tasks each claim one open slot (``join``) while
the job is on a worker under that attempt. Every change is a conditional UPDATE, so two joiners
never get the same slot and nothing joins a gang that was closed (``close``, when the leader gives
up waiting) or whose attempt ended. ``disband`` removes an attempt's rows when its run ends;
``sweep`` (the reaper) removes those of attempts that ended without it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from core.enums import JobStatus
from core.tables import Job, JobNode, utcnow

OPEN, JOINED, LEAVING, FAILED, CLOSED = "open", "joined", "leaving", "failed", "closed"


def _attempt_running(job_id: str, attempt: int):
    """The job is on a worker under ``attempt`` (a correlated EXISTS for WHERE clauses)."""
    return exists(select(Job.id).where(Job.id == job_id, Job.status.in_(JobStatus.on_worker()),
                                       Job.attempts == attempt).correlate_except(Job))


def form(session: Session, *, job_id: str, attempt: int, nodes: int, worker: str, address: str,
         rendezvous: dict[str, Any]) -> None:
    """Replace any earlier gang of the job with this attempt's: node 0 joined by ``worker`` (the
    rendezvous host, ``rendezvous`` telling the others what to run), nodes 1..nodes-1 open."""
    now = utcnow()
    session.execute(delete(JobNode).where(JobNode.job_id == job_id))
    session.add(JobNode(job_id=job_id, node=0, attempt=attempt, status=JOINED, worker=worker, address=address,
                        rendezvous=rendezvous, heartbeat_at=now))
    session.add_all(JobNode(job_id=job_id, node=n, attempt=attempt, status=OPEN) for n in range(1, nodes))
    session.commit()


def join(session: Session, *, job_id: str, attempt: int, worker: str, address: str) -> tuple[int, dict] | None:
    """Claim the lowest open slot of the attempt's gang for ``worker``: ``(node, rendezvous)``, or None
    when there is none to claim (full, closed, or the attempt ended)."""
    candidates = session.scalars(select(JobNode.node).where(JobNode.job_id == job_id, JobNode.attempt == attempt,
                                                            JobNode.status == OPEN).order_by(JobNode.node)).all()
    for node in candidates:
        claimed = session.execute(
            update(JobNode)
            .where(JobNode.job_id == job_id, JobNode.node == node, JobNode.attempt == attempt,
                   JobNode.status == OPEN, _attempt_running(job_id, attempt))
            .values(status=JOINED, worker=worker, address=address, heartbeat_at=utcnow())
        ).rowcount == 1
        if claimed:
            session.commit()
            rendezvous = session.scalar(select(JobNode.rendezvous).where(
                JobNode.job_id == job_id, JobNode.node == 0, JobNode.attempt == attempt))
            return node, rendezvous or {}
    session.rollback()
    return None


def members(session: Session, *, job_id: str, attempt: int) -> list[JobNode]:
    """The attempt's slots, node 0 first (read afresh)."""
    return list(session.scalars(select(JobNode).where(JobNode.job_id == job_id, JobNode.attempt == attempt)
                                .order_by(JobNode.node).execution_options(populate_existing=True)))


def beat(session: Session, *, job_id: str, attempt: int, node: int, status: str | None = None,
         error: str | None = None) -> bool:
    """A joined host's heartbeat (optionally becoming ``leaving`` or ``failed`` with ``error``); False
    when it is no longer in a running gang: the slot was removed or closed, or the attempt ended."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if status is not None:
        values["status"] = status
    if error is not None:
        values["error"] = error
    held = session.execute(
        update(JobNode)
        .where(JobNode.job_id == job_id, JobNode.node == node, JobNode.attempt == attempt,
               JobNode.status.in_((JOINED, LEAVING, FAILED)), _attempt_running(job_id, attempt))
        .values(**values)
    ).rowcount == 1
    session.commit()
    return held


def close(session: Session, *, job_id: str, attempt: int) -> list[JobNode]:
    """No more joins: the open slots become ``closed``; the attempt's slots as they are now."""
    session.execute(update(JobNode).where(JobNode.job_id == job_id, JobNode.attempt == attempt,
                                          JobNode.status == OPEN).values(status=CLOSED))
    session.commit()
    return members(session, job_id=job_id, attempt=attempt)


def stale(nodes: list[JobNode], *, older_than: timedelta) -> list[JobNode]:
    """Joined slots whose host stopped beating."""
    cutoff = utcnow() - older_than
    return [n for n in nodes if n.node > 0 and n.status in (JOINED, LEAVING) and n.heartbeat_at
            and n.heartbeat_at < cutoff]


def record_outcome(session: Session, *, job_id: str, attempt: int, outcome: dict[str, Any]) -> bool:
    """How the attempt's training ended (global rank 0, wherever it ran), for the leader to finish the job."""
    done = session.execute(update(JobNode).where(JobNode.job_id == job_id, JobNode.node == 0,
                                                 JobNode.attempt == attempt).values(outcome=outcome)).rowcount == 1
    session.commit()
    return done


def disband(session: Session, *, job_id: str, attempt: int) -> None:
    """Remove the attempt's slots (the joined hosts see their slot gone and stop)."""
    session.execute(delete(JobNode).where(JobNode.job_id == job_id, JobNode.attempt == attempt))
    session.commit()


def sweep(session: Session) -> int:
    """Remove slots of attempts that no longer run (the leader died, the job was requeued or ended)."""
    gone = session.execute(delete(JobNode).where(~_attempt_running(JobNode.job_id, JobNode.attempt))).rowcount
    session.commit()
    return gone
