"""Liveness, readiness (database, broker, storage) and the OpenAPI docs."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert {name: check["ok"] for name, check in ready.json()["checks"].items()} == {
        "database": True,
        "broker": True,
        "storage": True,
    }


def test_readyz_names_the_failing_dependency(settings, db):
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (
        "broker" in body["detail"] and body["checks"]["database"]["ok"] and not body["checks"]["broker"]["ok"]
    )
    assert "127.0.0.1" not in response.text and "6379" not in response.text  # no addresses to anyone


def test_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/datasets", "/v1/base-models", "/v1/jobs", "/v1/jobs/{job_id}/events"} <= set(paths)
