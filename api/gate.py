"""Authenticate and rate-limit every ``/v1`` request before the application reads any of its body.

An unauthenticated 300 MiB upload is answered 401 at once instead of being spooled to disk first,
and a key over its rate gets 429 with ``Retry-After``. The tenant is handed to the routes in
``request.state.tenant``. Signed download links (``/v1/files``) carry their own proof and pass.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth_cache import TenantCache
from api.problems import problem
from api.rate_limit import RateLimiter
from api.uploads import WITH_BODY
from core.services import api_keys
from core.tables import Tenant

log = logging.getLogger(__name__)
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
    """ASGI middleware in front of the ``/v1`` routes: 401, 429 or 503 before any body is read."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter):
        self.app, self.limiter = app, limiter

    @staticmethod
    def _authenticate(state, secret: str) -> Tenant | None:
        """The key's tenant, from the app's short-lived cache (trusted only while the revocation
        counter has not moved) or the database."""
        cache: TenantCache = state.tenant_cache
        cached = cache.sync(state.revocations.epoch())
        tenant = cache.get(secret) if cached else None
        if tenant is None:
            with state.sessionmaker() as session:
                tenant = api_keys.authenticate(session, secret=secret)
                if tenant is not None and cached:
                    session.expunge(tenant)
                    cache.put(secret, tenant)
        return tenant

    def _admit(self, state, secret: str, path: str) -> tuple[Tenant | None, Response | None]:
        """(tenant, None) for a request that may go on, else (None, the problem to answer); one hop
        to the thread pool for both the key and the rate."""
        try:
            tenant = self._authenticate(state, secret)
        except DBAPIError as err:
            log.warning("database unavailable while authenticating: %s", type(err).__name__)
            return None, problem(503, "the database is unavailable; retry shortly", headers={"Retry-After": "5"},
                                 instance=path)
        if tenant is None:
            return None, problem(401, "unknown or revoked API key", title="Unauthorized",
                                 headers={"WWW-Authenticate": "Bearer"}, instance=path)
        wait = self.limiter.retry_after(api_keys.hash_key(secret))
        if wait is not None:
            return None, problem(429, f"this API key is over its rate limit ({self.limiter.describe()}); "
                                 f"retry in {wait} s", title="Too many requests",
                                 headers={"Retry-After": str(wait)}, instance=path)
        return tenant, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(GUARDED) or path.startswith(OPEN):
            await self.app(scope, receive, send)
            return
        secret = bearer_secret(scope)
        if secret is None:
            tenant, response = None, problem(401, "send an API key as 'Authorization: Bearer <key>'",
                                             title="Unauthorized", headers={"WWW-Authenticate": "Bearer"},
                                             instance=path)
        else:
            tenant, response = await run_in_threadpool(self._admit, scope["app"].state, secret, path)
        if response is not None:
            if scope["method"] in WITH_BODY:  # stop here: the server does not read the rest of the body
                response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["tenant"] = tenant
        await self.app(scope, receive, send)
