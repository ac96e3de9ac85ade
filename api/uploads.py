"""Bounds on uploads: a body whose declared Content-Length is over its route's limit is refused before
any of it is read (problem+json 413; bodies without a length are cut off by the routers'
``max_body_size`` while streaming), and only a few archives are validated at once per process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import problem
from core.errors import Busy

WITH_BODY = {"POST", "PUT", "PATCH"}


class ContentLengthLimit:
    """ASGI middleware: a request under a path prefix declaring more than that prefix's limit gets a 413."""

    def __init__(self, app: ASGIApp, *, limits: dict[str, int]):
        self.app = app
        self.limits = sorted(limits.items(), key=lambda item: -len(item[0]))  # longest prefix first

    def _limit(self, path: str) -> int | None:
        return next((size for prefix, size in self.limits if path == prefix or path.startswith(prefix + "/")), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WITH_BODY:
            limit = self._limit(scope["path"].rstrip("/"))
            length = dict(scope["headers"]).get(b"content-length", b"")
            if limit is not None and length.isdigit() and int(length) > limit:
                detail = f"the request body declares {int(length)} bytes; the limit here is {limit}"
                await problem(413, detail, title="Request too large", instance=scope["path"])(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ValidationSlots:
    """At most ``size`` archives are unpacked and decoded at once in this process (each may hold an
    image of up to ``max_image_pixels``); the next waits up to ``wait`` seconds, then gets a 503."""

    def __init__(self, size: int, wait: float = 30.0):
        self.size, self.wait = size, wait
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self.wait):
            raise Busy(f"{self.size} uploads are being validated; retry shortly", retry_after=10)
        try:
            yield
        finally:
            self._slots.release()
