"""Refuse an upload whose declared Content-Length is over the limit, before reading any of it.

Bodies without a length (chunked) are cut off by the route's ``max_body_size`` while streaming.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import problem


class ContentLengthLimit:
    """ASGI middleware: a POST to ``path`` declaring more than ``max_bytes`` gets a 413 problem."""

    def __init__(self, app: ASGIApp, *, path: str, max_bytes: int):
        self.app, self.path, self.max_bytes = app, path, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].rstrip("/") == self.path:
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_bytes:
                detail = f"the upload declares {int(length)} bytes; the limit is {self.max_bytes}"
                await problem(413, detail, title="Upload rejected", instance=self.path)(scope, receive, send)
                return
        await self.app(scope, receive, send)
