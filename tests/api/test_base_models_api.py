"""Registering base models: locations, pending status, idempotency, pagination, tenants."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "location",
    [
        {"kind": "s3", "uri": "s3://models/dit-xl-2-256"},
        {"kind": "local", "path": "/srv/models/tiny-dit"},
        {"kind": "hub", "repo_id": "facebook/DiT-XL-2-256", "revision": "main"},
    ],
)
def test_register_is_pending(client, auth, location):
    response = client.post(
        "/v1/base-models", headers=auth, json={"name": "m", "family": "dit", "location": location}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("bm_") and body["status"] == "pending" and body["location"] == location
    assert client.get(f"/v1/base-models/{body['id']}", headers=auth).json() == body


def test_idempotency_key_returns_the_same_model(client, auth):
    body = {"name": "m", "family": "sd", "location": {"kind": "local", "path": "/m"}}
    headers = {**auth, "Idempotency-Key": "k1"}
    first = client.post("/v1/base-models", headers=headers, json=body).json()
    second = client.post("/v1/base-models", headers=headers, json=body)
    assert second.status_code == 201 and second.json()["id"] == first["id"]
    assert len(client.get("/v1/base-models", headers=auth).json()["data"]) == 1
    changed = client.post("/v1/base-models", headers=headers, json={**body, "name": "other"})
    assert changed.status_code == 422 and changed.json()["errors"][0]["field"] == "Idempotency-Key"


def test_pagination_walks_every_model_once(client, auth):
    ids = []
    for i in range(5):
        body = {"name": f"m{i}", "family": "dit", "location": {"kind": "local", "path": "/m"}}
        ids.append(client.post("/v1/base-models", headers=auth, json=body).json()["id"])
    seen, after = [], None
    while True:
        page = client.get(
            "/v1/base-models", headers=auth, params={"limit": 2, **({"after": after} if after else {})}
        )
        body = page.json()
        assert body["object"] == "list" and len(body["data"]) <= 2
        seen += [m["id"] for m in body["data"]]
        if not body["has_more"]:
            break
        after = body["data"][-1]["id"]
    assert seen == ids[::-1]


def test_other_tenant_gets_404(client, auth, other_auth, base_model):
    response = client.get(f"/v1/base-models/{base_model['id']}", headers=other_auth)
    assert response.status_code == 404
    assert client.get("/v1/base-models", headers=other_auth).json()["data"] == []
