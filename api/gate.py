"""Authenticate and rate-limit every ``/v1`` request before the application reads any of its body.

An unauthenticated 300 MiB upload is answered 401 at once instead of being spooled to disk first,
and a key over its rate gets 429 with ``Retry-After``. The key is a bearer token or, from the web
dashboard's pages, its session cookie (``api.dashboard.session``). The tenant is handed to the routes in
``request.state.tenant``. Signed download links (``/v1/files``) carry their own proof and pass.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import admit
from api.dashboard import session
from api.problems import problem
from api.uploads import WITH_BODY

GUARDED = "/v1/"
OPEN = ("/v1/files/",)


def bearer_secret(scope: Scope) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, if any."""
    value = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    scheme, _, secret = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return secret.strip() or None


class Gate:
    """ASGI middleware in front of the ``/v1`` routes: 401, 403, 429 or 503 before any body is read.

    The key is the bearer token, else the dashboard's session cookie (``api.dashboard.session``): with the
    cookie, a request that changes something must also carry the session's CSRF token header."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(GUARDED) or path.startswith(OPEN):
            await self.app(scope, receive, send)
            return
        secret, refusal = bearer_secret(scope), None
        if secret is None:
            secret, refusal = session.api_credentials(scope)
        if refusal is not None:
            tenant, response = None, problem(403, refusal, title="Forbidden", instance=path)
        elif secret is None:
            tenant, response = None, problem(401, "send an API key as 'Authorization: Bearer <key>'",
                                             title="Unauthorized", headers={"WWW-Authenticate": "Bearer"},
                                             instance=path)
        else:
            tenant, response = await run_in_threadpool(admit, scope["app"].state, secret, path)
        if response is not None:
            if scope["method"] in WITH_BODY:  # stop here: the server does not read the rest of the body
                response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["tenant"] = tenant
        await self.app(scope, receive, send)
