"""Jinja2 templates (autoescaped), their filters, and the HTML responses of the dashboard's pages."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.dashboard.session import CSRF_FIELD, Viewer
from core.enums import JobStatus

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_URL = "/ui/static"


@cache
def static_url(name: str) -> str:
    """The URL of a static file, with a hash of its content so a new release is never served from cache."""
    digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:10]
    return f"{STATIC_URL}/{name}?v={digest}"


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 04 min``; an em dash when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def when(value: datetime | None) -> str:
    """A timestamp in UTC to the second (the page's JavaScript shows it in the viewer's time zone)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def number(value: Any, digits: int = 4) -> str:
    """A figure with ``digits`` significant digits; other values as they are."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def size(value: int | None) -> str:
    """Bytes as ``1.5 MiB``."""
    if value is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


@cache
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(duration=duration, when=when, number=number, size=size)
    env.globals.update(static=static_url, csrf_field=CSRF_FIELD, statuses=[s.value for s in JobStatus],
                       unfinished=[s.value for s in JobStatus.unfinished()])
    return env


def page(request: Request, template: str, viewer: Viewer | None, *, code: int = 200, **context: Any) -> HTMLResponse:
    """A rendered page; never cached (it holds the session's CSRF token and the tenant's data)."""
    html = environment().get_template(template).render(request=request, viewer=viewer, **context)
    return HTMLResponse(html, status_code=code, headers={"Cache-Control": "no-store"})
