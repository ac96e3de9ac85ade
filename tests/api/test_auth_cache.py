"""The key → tenant cache: hits within the TTL, expiry, and no caching of unknown keys."""

from __future__ import annotations

import time

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


def test_api_requests_reuse_the_cached_tenant(client, auth, app):
    assert client.get("/v1/jobs", headers=auth).status_code == 200
    secret = auth["Authorization"].removeprefix("Bearer ")
    cached = app.state.tenant_cache.get(secret)
    assert cached is not None and cached.name
    assert client.get("/v1/jobs", headers=auth).status_code == 200
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer dtk_unknown"}).status_code == 401
    assert app.state.tenant_cache.get("dtk_unknown") is None
