"""API-key verification shared by the ``/v1`` gate (``api.gate``) and the dashboard's pages
(``api.dashboard.session``): the key's tenant (cached for a few seconds) and the key's rate."""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError
from starlette.responses import Response

from api.auth_cache import TenantCache
from api.problems import problem
from api.rate_limit import RateLimiter
from core.services import api_keys
from core.tables import Tenant

log = logging.getLogger(__name__)


def authenticate(state, secret: str) -> Tenant | None:
    """The key's tenant, from the app's short-lived cache (trusted only while the revocation counter has
    not moved) or the database."""
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


def admit(state, secret: str, path: str) -> tuple[Tenant | None, Response | None]:
    """(tenant, None) for a request with this key that may go on, else (None, the problem to answer):
    the key's tenant and the key's rate (``state.rate_limiter``). Every ``/v1`` request and every page
    of the dashboard goes through here."""
    limiter: RateLimiter = state.rate_limiter
    try:
        tenant = authenticate(state, secret)
    except DBAPIError as err:
        log.warning("database unavailable while authenticating: %s", type(err).__name__)
        return None, problem(503, "the database is unavailable; retry shortly", headers={"Retry-After": "5"},
                             instance=path)
    if tenant is None:
        return None, problem(401, "unknown or revoked API key", title="Unauthorized",
                             headers={"WWW-Authenticate": "Bearer"}, instance=path)
    wait = limiter.retry_after(api_keys.hash_key(secret))
    if wait is not None:
        return None, problem(429, f"this API key is over its rate limit ({limiter.describe()}); "
                             f"retry in {wait} s", title="Too many requests",
                             headers={"Retry-After": str(wait)}, instance=path)
    return tenant, None
