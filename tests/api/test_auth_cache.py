"""The key → tenant cache: hits within the TTL, expiry, and no caching of unknown keys."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from api.auth_cache import TenantCache
from core.tables import Tenant


def test_entries_expire_and_zero_ttl_disables_caching():
    cache = TenantCache(ttl=0.2)
    tenant = Tenant(id="tn_1", name="acme")
    cache.put("dtk_secret", tenant)
    assert cache.get("dtk_secret") is tenant and cache.get("dtk_other") is None
    time.sleep(0.25)
    assert cache.get("dtk_secret") is None
    off = TenantCache(ttl=0)
    off.put("dtk_secret", tenant)
    assert off.get("dtk_secret") is None


@pytest.fixture
def key_lookups():
    """Counts the SQL statements that read the api_key table, on any engine."""
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if "JOIN api_key" in statement or "FROM api_key" in statement:
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    yield seen
    event.remove(Engine, "before_cursor_execute", count)


def test_api_requests_within_the_ttl_do_not_query_the_key_again(client, auth, app, key_lookups):
    app.state.tenant_cache = TenantCache(ttl=0.5)
    assert client.get("/v1/jobs", headers=auth).status_code == 200
    assert len(key_lookups) == 1
    for _ in range(3):
        assert client.get("/v1/jobs", headers=auth).status_code == 200
    assert len(key_lookups) == 1  # served from the cache
    for _ in range(2):  # unknown keys are looked up every time, never cached
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer dtk_unknown"}).status_code == 401
    assert len(key_lookups) == 3 and app.state.tenant_cache.get("dtk_unknown") is None
    time.sleep(0.6)
    assert client.get("/v1/jobs", headers=auth).status_code == 200
    assert len(key_lookups) == 4  # expired: looked up again
