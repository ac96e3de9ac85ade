"""Jobs over REST: create (queued + enqueued), validation, idempotency, list, cancel, tenants."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from core.queue import GPU_QUEUE
from core.services import jobs
from core.tables import Job


@pytest.fixture
def job_body(base_model, dataset) -> dict:
    return {
        "base_model": base_model["id"],
        "dataset": dataset["id"],
        "method": "difftune",
        "hyperparameters": {"max_steps": 50, "bank_share": 0.25, "resolution": 16},
        "validation_labels": [0, 1],
        "seed": 7,
        "metadata": {"team": "vision"},
        "resources": {"gpus": 2},
    }


def queued_job_ids(redis_client) -> list[str]:
    """Ids sent to run_job (registering a base model also enqueues its load check: skipped here)."""
    messages = [json.loads(m) for m in redis_client.lrange(GPU_QUEUE, 0, -1)]
    return [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages
            if m["headers"]["task"] == "worker.tasks.run_job"]


def test_create_returns_queued_job_and_enqueues_it(client, auth, job_body, redis_client):
    response = client.post("/v1/jobs", headers=auth, json=job_body)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["id"].startswith("job_") and job["status"] == "queued"
    assert job["hyperparameters"]["bank_share"] == 0.25 and job["hyperparameters"]["seed"] == 7
    assert (
        job["hyperparameters"]["validation_labels"] == [0, 1]
        and job["hyperparameters"]["learning_rate"] == 1e-4
    )
    assert job["progress"] == {"step": 0, "total_steps": 50, "eta_seconds": None, "estimated_finish": None}
    assert job["resources"] == {"gpus": 2} and job["metadata"] == {"team": "vision"}
    assert queued_job_ids(redis_client) == [job["id"]]
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["id"] == job["id"]


def test_idempotency_key_returns_the_same_job(client, auth, job_body, db):
    headers = {**auth, "Idempotency-Key": "retry-1"}
    first = client.post("/v1/jobs", headers=headers, json=job_body).json()
    second = client.post("/v1/jobs", headers=headers, json=job_body)
    assert second.status_code == 201 and second.json()["id"] == first["id"]
    assert db.scalar(select(func.count()).select_from(Job)) == 1
    other = client.post("/v1/jobs", headers=headers, json={**job_body, "seed": 8})
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hyperparameters": {"bank_share": 1.5}}, "hyperparameters.bank_share"),
        ({"hyperparameters": {"bank": {"sampler": "euler"}}}, "hyperparameters.bank.sampler"),
        ({"hyperparameters": {"seed": 1}}, "hyperparameters.seed"),
        ({"method": "lora"}, "method"),
        ({"validation_labels": [0, 9]}, "validation_labels"),
        ({"resources": {"gpus": 0}}, "resources.gpus"),
        ({"base_model": "bm_missing"}, "base_model"),
        ({"dataset": "ds_missing"}, "dataset"),
        ({"surprise": True}, "surprise"),
        ({"seed": 2**70}, "seed"),  # was a 500: out of range for the BIGINT column
        ({"hyperparameters": {"max_steps": 10**12}}, "hyperparameters.max_steps"),
    ],
)
def test_invalid_requests_name_the_field(client, auth, job_body, db, change, field):
    response = client.post("/v1/jobs", headers=auth, json={**job_body, **change})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]
    assert db.scalar(select(func.count()).select_from(Job)) == 0


def test_another_tenants_resources_are_invisible(client, auth, other_auth, job_body):
    response = client.post("/v1/jobs", headers=other_auth, json=job_body)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "base_model"
    job_id = client.post("/v1/jobs", headers=auth, json=job_body).json()["id"]
    for path in ("", "/events", "/checkpoints", "/samples"):
        assert client.get(f"/v1/jobs/{job_id}{path}", headers=other_auth).status_code == 404
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=other_auth).status_code == 404
    assert client.get("/v1/jobs", headers=other_auth).json()["data"] == []


def test_list_filters_by_status_and_paginates(client, auth, job_body, db):
    ids = [client.post("/v1/jobs", headers=auth, json=job_body).json()["id"] for _ in range(3)]
    jobs.claim(db, job_id=ids[0], worker="w")
    page = client.get("/v1/jobs", headers=auth, params={"limit": 1}).json()
    assert [j["id"] for j in page["data"]] == [ids[2]] and page["has_more"]
    rest = client.get("/v1/jobs", headers=auth, params={"after": ids[2]}).json()
    assert [j["id"] for j in rest["data"]] == [ids[1], ids[0]] and not rest["has_more"]
    running = client.get("/v1/jobs", headers=auth, params={"status": "running"}).json()["data"]
    assert [j["id"] for j in running] == [ids[0]]
    bad = client.get("/v1/jobs", headers=auth, params={"status": "sleeping"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"


def test_cancel_flow(client, auth, job_body, db):
    queued = client.post("/v1/jobs", headers=auth, json=job_body).json()["id"]
    assert client.post(f"/v1/jobs/{queued}/cancel", headers=auth).json()["status"] == "cancelled"
    again = client.post(f"/v1/jobs/{queued}/cancel", headers=auth)
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    running = client.post("/v1/jobs", headers=auth, json=job_body).json()["id"]
    jobs.claim(db, job_id=running, worker="w")
    assert client.post(f"/v1/jobs/{running}/cancel", headers=auth).json()["status"] == "cancelling"
    assert client.post(f"/v1/jobs/{running}/cancel", headers=auth).json()["status"] == "cancelling"  # still stopping
    done = client.post("/v1/jobs", headers=auth, json=job_body).json()["id"]
    jobs.claim(db, job_id=done, worker="w")
    jobs.mark_succeeded(db, job_id=done, attempt=1)
    response = client.post(f"/v1/jobs/{done}/cancel", headers=auth)
    assert response.status_code == 409 and "succeeded" in response.json()["detail"]
    assert client.get(f"/v1/jobs/{done}", headers=auth).json()["status"] == "succeeded"


def test_broker_down_fails_the_job_with_503(settings, db, auth, base_model, dataset, job_body):
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken)) as client:
        response = client.post("/v1/jobs", headers=auth, json=job_body)
        assert response.status_code == 503 and response.headers["content-type"] == "application/problem+json"
        job = client.get(f"/v1/jobs/{response.json()['job']}", headers=auth).json()
    assert job["status"] == "failed" and "could not be enqueued" in job["error"]
