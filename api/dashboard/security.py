"""Security headers of every ``/ui`` response: a strict Content-Security-Policy (our own scripts and styles
only, no inline code), no framing, no MIME sniffing, no referrer to other sites."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import Settings

PREFIX = "/ui"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def image_sources(settings: Settings) -> list[str]:
    """Where sample grids and thumbnails come from: this site, the public URL of local download links,
    or the S3 endpoint that presigns them (AWS: its virtual-hosted buckets)."""
    sources = ["'self'", "data:", _origin(settings.public_url)]
    if settings.storage.scheme == "s3":
        endpoint = settings.s3_public_endpoint or settings.s3_endpoint
        if endpoint:
            parts = urlsplit(endpoint)
            sources += [_origin(endpoint), f"{parts.scheme}://*.{parts.netloc}"]
        else:
            sources.append("https://*.amazonaws.com")
    return list(dict.fromkeys(sources))


def content_security_policy(settings: Settings) -> str:
    return "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src 'self'", f"img-src {' '.join(image_sources(settings))}",
        "connect-src 'self'", "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'",
    ])


class SecurityHeaders:
    """ASGI middleware adding the headers to responses under ``/ui`` (streaming untouched)."""

    def __init__(self, app: ASGIApp, *, settings: Settings):
        self.app = app
        self.headers = {
            "Content-Security-Policy": content_security_policy(settings),
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
