"""Server-sent events of a job's log: poll the database, stop after the job ends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from api.schemas import EventOut
from core.enums import JobStatus
from core.services import job_events
from core.tables import Job

KEEPALIVE_SECONDS = 15.0


def _batch(factory: sessionmaker[Session], job_id: str, after: int | None) -> tuple[list[EventOut], str]:
    with factory() as session:
        page = job_events.list_page(session, job_id=job_id, limit=100, after=after)
        status = session.get(Job, job_id).status
        return [event_out(e) for e in page.data], status


def event_out(event) -> EventOut:
    """The API form of an event row."""
    fields = {k: getattr(event, k) for k in ("created_at", "level", "type", "message", "data")}
    return EventOut(id=job_events.public_id(event), **fields)


def format_event(event: EventOut) -> str:
    """One SSE frame."""
    return f"id: {event.id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"


async def stream_events(
    request: Request, job_id: str, after: int | None, poll_seconds: float
) -> AsyncIterator[str]:
    """Yield events as they arrive; end with an ``end`` frame once the job is finished."""
    factory = request.app.state.sessionmaker
    idle = 0.0
    while not await request.is_disconnected():
        events, status = await anyio.to_thread.run_sync(_batch, factory, job_id, after)
        for event in events:
            yield format_event(event)
        if events:
            after, idle = job_events.parse_id(events[-1].id), 0.0
            continue
        if status in JobStatus.terminal():
            yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"
            return
        if idle >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            idle = 0.0
        await anyio.sleep(poll_seconds)
        idle += poll_seconds
