"""Job events: a job's log of status changes, progress and messages, in order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.services.pagination import Page, paginate
from core.tables import JobEvent

EVENT_PREFIX = "evt_"


def public_id(event: JobEvent) -> str:
    """The event's id as the API shows it."""
    return f"{EVENT_PREFIX}{event.id}"


def parse_id(value: str) -> int | None:
    """The row id of a public event id, or None when malformed."""
    number = value.removeprefix(EVENT_PREFIX)
    valid = value.startswith(EVENT_PREFIX) and number.isascii() and number.isdigit() and len(number) <= 18
    return int(number) if valid else None  # ASCII only: "²".isdigit() is true but int("²") fails


def add(
    session: Session,
    *,
    job_id: str,
    message: str,
    level: str = "info",
    type: str = "message",
    data: Any = None,
) -> JobEvent:
    """Stage an event in the caller's transaction (no commit)."""
    event = JobEvent(job_id=job_id, message=message, level=level, type=type, data=data)
    session.add(event)
    return event


def create(
    session: Session,
    *,
    job_id: str,
    message: str,
    level: str = "info",
    type: str = "message",
    data: Any = None,
) -> JobEvent:
    """Record an event."""
    event = add(session, job_id=job_id, message=message, level=level, type=type, data=data)
    session.commit()
    return event


def list_page(session: Session, *, job_id: str, limit: int = 20, after: int | None = None) -> Page[JobEvent]:
    """A job's events, oldest first, after the row id ``after``."""
    stmt = select(JobEvent).where(JobEvent.job_id == job_id)
    return paginate(session, stmt, key=JobEvent.id, limit=limit, after=after, newest_first=False)
