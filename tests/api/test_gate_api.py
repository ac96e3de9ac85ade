"""The gate in front of ``/v1``: no body is read before the key is checked, per-key rate limits
(429 + Retry-After, counted in Redis), and revoked keys refused at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.services import api_keys


class CountingBody:
    """A well-formed multipart upload of ``size`` bytes that records how much of it the server pulled."""

    HEAD = b'--x\r\nContent-Disposition: form-data; name="file"; filename="d.zip"\r\n\r\n'

    def __init__(self, size: int, chunk: int = 64 * 1024):
        self.size, self.chunk, self.sent = size, chunk, 0

    def __iter__(self):
        yield self.HEAD
        while self.sent < self.size:
            self.sent += self.chunk
            yield b"\0" * self.chunk
        yield b"\r\n--x--\r\n"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer dtk_wrong"}])
def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(client, headers):
    body = CountingBody(size=1024 * 1024)  # under the upload limit, and no Content-Length to precheck
    response = client.post("/v1/datasets", content=body,
                           headers={**headers, "Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 401 and response.headers["content-type"] == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert body.sent <= 2 * body.chunk  # not the whole MiB


def test_a_key_over_its_rate_gets_429_with_retry_after(settings, db, redis_client, auth, other_auth):
    from fastapi.testclient import TestClient

    from api.app import create_app

    app = create_app(settings.model_copy(update={"rate_limit": "5/minute"}))
    with TestClient(app) as client:
        codes = [client.get("/v1/jobs", headers=auth).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        refused = client.get("/v1/datasets", headers=auth)
        assert refused.status_code == 429 and refused.headers["content-type"] == "application/problem+json"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "rate limit" in refused.json()["detail"]
        assert client.get("/v1/jobs", headers=other_auth).status_code == 200  # another key is not throttled
    with TestClient(create_app(settings.model_copy(update={"rate_limit": "5/minute"}))) as second:
        assert second.get("/v1/jobs", headers=auth).status_code == 429  # counted in Redis, not per process


def test_a_tenant_revokes_a_key_and_it_stops_working_at_once(client, auth):
    created = client.post("/v1/api-keys", headers=auth, json={"name": "ci"})
    assert created.status_code == 201, created.text
    new = {"Authorization": f"Bearer {created.json()['secret']}"}
    assert client.get("/v1/jobs", headers=new).status_code == 200
    listed = client.get("/v1/api-keys", headers=new).json()["data"]
    assert [k["name"] for k in listed] == ["", "ci"] and all("secret" not in k for k in listed)
    assert client.delete(f"/v1/api-keys/{created.json()['id']}", headers=auth).status_code == 204
    refused = client.get("/v1/jobs", headers=new)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert client.get("/v1/jobs", headers=auth).status_code == 200


def test_another_tenants_key_cannot_be_revoked(client, auth, other_auth):
    other_key = client.get("/v1/api-keys", headers=other_auth).json()["data"][0]["id"]
    response = client.delete(f"/v1/api-keys/{other_key}", headers=auth)
    assert response.status_code == 404
    assert client.get("/v1/jobs", headers=other_auth).status_code == 200


def test_keys_revoke_cli_refuses_the_key_in_a_running_api(client, auth, db, settings):
    """`difftune keys revoke` is a separate process: the API has the key cached, and still refuses it
    on the next request (the revocation is announced through Redis)."""
    key = api_keys.list_of(db, tenant_id=api_keys.authenticate(db, secret=auth["Authorization"][7:]).id)[0]
    assert client.get("/v1/jobs", headers=auth).status_code == 200
    assert client.app.state.tenant_cache.get(auth["Authorization"][7:]) is not None  # cached
    env = {"DIFFTUNE_DATABASE_URL": settings.database_url, "DIFFTUNE_BROKER_URL": settings.broker_url,
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "cli.main", "keys", "revoke", key.prefix], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"revoked key {key.id}" in done.stdout
    assert client.get("/v1/jobs", headers=auth).status_code == 401
    again = subprocess.run([sys.executable, "-m", "cli.main", "keys", "revoke", "key_nope"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "no API key with id 'key_nope'" in again.stderr


def test_without_redis_keys_are_not_cached(settings, db, auth):
    """No way to tell other API processes of a revocation: every request asks the database."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    app = create_app(settings.model_copy(update={"rate_limit_storage_url": "memory://"}))
    with TestClient(app) as client:
        assert client.get("/v1/jobs", headers=auth).status_code == 200
        assert app.state.tenant_cache.get(auth["Authorization"][7:]) is None
