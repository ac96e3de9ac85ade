"""Events (pages and SSE), checkpoints and samples with download URLs, local signed links."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.services import job_events, jobs, outputs
from core.storage.keys import checkpoint_prefix, sample_key


@pytest.fixture
def job(client, auth, base_model, dataset) -> dict:
    body = {"base_model": base_model["id"], "dataset": dataset["id"], "hyperparameters": {"max_steps": 20, "resolution": 16}}
    return client.post("/v1/jobs", headers=auth, json=body).json()


def run_to_success(db, job_id: str) -> None:
    jobs.claim(db, job_id=job_id, worker="w1")
    for step in (5, 10):
        jobs.update_progress(
            db, job_id=job_id, attempt=1, step=step, eta_seconds=30, metrics={"loss": 1 / step}, message=f"step {step}"
        )
    jobs.mark_succeeded(db, job_id=job_id, attempt=1)


def test_progress_is_visible_on_the_job(client, auth, job, db):
    jobs.claim(db, job_id=job["id"], worker="w1")
    jobs.update_progress(db, job_id=job["id"], attempt=1, step=5, eta_seconds=30, metrics={"loss": 0.2})
    body = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert body["status"] == "running" and body["metrics"] == {"loss": 0.2} and body["attempts"] == 1
    assert body["progress"]["step"] == 5 and 25 < body["progress"]["eta_seconds"] <= 30


def test_events_are_paginated_oldest_first(client, auth, job, db):
    run_to_success(db, job["id"])
    first = client.get(f"/v1/jobs/{job['id']}/events", headers=auth, params={"limit": 2}).json()
    assert [e["message"] for e in first["data"]] == ["job queued", "claimed by w1"] and first["has_more"]
    rest = client.get(
        f"/v1/jobs/{job['id']}/events", headers=auth, params={"after": first["data"][-1]["id"]}
    ).json()
    assert [e["message"] for e in rest["data"]] == ["step 5", "step 10", "job succeeded"] and not rest[
        "has_more"
    ]
    assert rest["data"][0]["data"] == {"step": 5, "attempt": 1, "loss": 0.2}
    bad = client.get(f"/v1/jobs/{job['id']}/events", headers=auth, params={"after": "nope"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "after"


def parse_sse(text: str) -> list[dict]:
    frames = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        frames.append(fields)
    return frames


def test_event_stream_replays_and_ends_with_the_job(client, auth, job, db):
    run_to_success(db, job["id"])
    response = client.get(f"/v1/jobs/{job['id']}/events", headers={**auth, "Accept": "text/event-stream"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    frames = parse_sse(response.text)
    assert [f["event"] for f in frames] == ["status", "status", "progress", "progress", "status", "end"]
    assert json.loads(frames[-1]["data"]) == {"status": "succeeded"}
    resumed = client.get(
        f"/v1/jobs/{job['id']}/events",
        headers={**auth, "Last-Event-ID": frames[3]["id"]},
        params={"stream": "true"},
    )
    assert [f.get("id") for f in parse_sse(resumed.text)][:1] == [frames[4]["id"]]


def test_event_stream_follows_a_running_job(app, client, auth, job, db):
    jobs.claim(db, job_id=job["id"], worker="w1")
    seen = []
    with client.stream("GET", f"/v1/jobs/{job['id']}/events?stream=true", headers=auth) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and "claimed by" in line:
                job_events.create(db, job_id=job["id"], message="live event")
                jobs.mark_failed(db, job_id=job["id"], error="boom")
            if line.startswith("event: "):
                seen.append(line.removeprefix("event: "))
    assert seen == ["status", "status", "message", "status", "end"]


def test_checkpoints_and_samples_come_with_working_urls(client, auth, job, db, storage):
    prefix = checkpoint_prefix(job["id"], 10)
    storage.put_stream(prefix + "model_index.json", io.BytesIO(b'{"_class_name": "DiTPipeline"}'))
    storage.put_stream(prefix + "transformer/diffusion_pytorch_model.safetensors", io.BytesIO(b"weights"))
    storage.put_stream(sample_key(job["id"], 10), io.BytesIO(b"png bytes"), content_type="image/png")
    outputs.create_checkpoint(db, job_id=job["id"], step=10, metrics={"loss": 0.1})
    outputs.create_sample(db, job_id=job["id"], step=10)
    db.commit()

    checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()["data"]
    assert [(c["step"], c["metrics"]) for c in checkpoints] == [(10, {"loss": 0.1})]
    files = {f["path"]: f["url"] for f in checkpoints[0]["files"]}
    assert set(files) == {"model_index.json", "transformer/diffusion_pytorch_model.safetensors"}
    assert httpx.get(files["transformer/diffusion_pytorch_model.safetensors"]).content == b"weights"
    samples = client.get(f"/v1/jobs/{job['id']}/samples", headers=auth).json()["data"]
    assert samples[0]["step"] == 10 and httpx.get(samples[0]["url"]).content == b"png bytes"


def test_local_storage_downloads_need_a_valid_signature(settings, db, auth, tmp_path):
    local = settings.model_copy(
        update={"storage_url": f"file://{tmp_path}/store", "public_url": "http://testserver"}
    )
    with TestClient(create_app(local)) as client:
        store = client.app.state.storage
        store.put_stream("jobs/job_x/samples/step_0000001.png", io.BytesIO(b"grid"))
        url = store.url_for("jobs/job_x/samples/step_0000001.png", expires_in=60)
        assert client.get(url).content == b"grid"
        tampered = client.get(url.replace("step_0000001", "step_0000002"))
        assert tampered.status_code == 403 and tampered.headers["content-type"] == "application/problem+json"
        assert client.get("/v1/files/x.png").status_code == 422
