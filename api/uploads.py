"""Refuse a request body whose declared Content-Length is over its route's limit, before reading any
of it, as a problem+json 413.

Bodies without a length (chunked) are cut off by the routers' ``max_body_size`` while streaming.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import problem

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
