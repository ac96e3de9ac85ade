"""Server-sent events: a frame parser and a job's event stream that resumes after a dropped connection."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from difftune_client.errors import ApiConnectionError
from difftune_client.types import Event

if TYPE_CHECKING:
    from difftune_client._http import Core


@dataclass
class Frame:
    """One server-sent event."""

    event: str = "message"
    data: str = ""
    id: str | None = None


def parse_frames(lines: Iterable[str]) -> Iterator[Frame]:
    """Frames of an ``text/event-stream`` given as lines (comments dropped, ``data`` lines joined)."""
    event, data, ident, seen = "message", [], None, False
    for line in lines:
        line = line.rstrip("\r")
        if not line:
            if seen:
                yield Frame(event, "\n".join(data), ident)
            event, data, ident, seen = "message", [], None, False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        seen = True
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            ident = value
    if seen:
        yield Frame(event, "\n".join(data), ident)


class EventStream:
    """A job's events as they happen (``GET /v1/jobs/{id}/events?stream=true``).

    Iterating yields :class:`Event` objects and stops after the service's ``end`` frame (the job
    finished: ``status`` then holds its final status). A dropped connection is resumed from the
    last event seen (``Last-Event-ID``), at most ``max_reconnects`` times in a row.
    """

    def __init__(self, core: Core, job_id: str, *, after: str | None = None, max_reconnects: int = 5,
                 read_timeout: float = 60.0):
        self._core, self.job_id = core, job_id
        self.last_event_id = after
        self.max_reconnects = max_reconnects
        self.status: str | None = None
        self._timeout = httpx.Timeout(core.timeout.connect or 30.0, read=read_timeout)

    def __iter__(self) -> Iterator[Event]:
        failures = 0
        while self.status is None:
            headers = {"Accept": "text/event-stream"}
            if self.last_event_id:
                headers["Last-Event-ID"] = self.last_event_id
            try:
                with self._core.stream("GET", f"/v1/jobs/{self.job_id}/events", params={"stream": "true"},
                                       headers=headers, timeout=self._timeout) as response:
                    for frame in parse_frames(response.iter_lines()):
                        if frame.event == "end":
                            self.status = _end_status(frame.data)
                            return
                        if not frame.data:
                            continue
                        event = Event.model_validate_json(frame.data)
                        self.last_event_id = frame.id or event.id
                        failures = 0
                        yield event
                problem = "the stream ended before the job did"
            except httpx.TransportError as err:  # dropped mid-stream (connecting is retried by send)
                problem = f"{type(err).__name__}: {err}"
            failures += 1
            if failures > self.max_reconnects:
                raise ApiConnectionError(f"events of {self.job_id}: {problem} ({self.max_reconnects} reconnects)")
            self._core.sleep(self._core.backoff(failures - 1))


def _end_status(data: str) -> str:
    try:
        return str(json.loads(data).get("status") or "finished")
    except (ValueError, AttributeError):
        return "finished"
