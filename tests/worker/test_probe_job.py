"""The forgetting probe as a service job: REST validation, the worker run, its metrics and reports."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

PROBE = {"points": 3, "samples_per_class": 2, "sample_steps": 2, "seed": 3}


@pytest.fixture
def tuned_job(make_job, worker_ctx, client, auth):
    """A tiny difftune job that ran to completion (checkpoints at steps 3 and 6)."""
    from worker.pipeline import run

    job = make_job()
    assert run(job["id"]) == "succeeded", client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["error"]
    return job


def _probe(client, auth, job_id, **body):
    return client.post(f"/v1/jobs/{job_id}/forgetting-probes", headers=auth, json={**PROBE, **body})


def test_probe_job_scores_both_directions_and_publishes_reports(tuned_job, worker_ctx, client, auth, storage,
                                                                 one_thread):
    from worker.pipeline import run

    created = _probe(client, auth, tuned_job["id"], checkpoint_step=3)
    assert created.status_code == 201, created.text
    probe = created.json()
    assert probe["kind"] == "forgetting_probe" and probe["status"] == "queued"
    assert probe["hyperparameters"]["tuned_job"] == tuned_job["id"]
    assert probe["hyperparameters"]["checkpoint_step"] == 3
    assert probe["progress"]["total_steps"] == 6  # 2 directions x 1 guidance x 3 swap steps
    assert probe["dataset"] == tuned_job["dataset"] and probe["base_model"] == tuned_job["base_model"]

    assert run(probe["id"]) == "succeeded", client.get(f"/v1/jobs/{probe['id']}", headers=auth).json()["error"]
    body = client.get(f"/v1/jobs/{probe['id']}", headers=auth).json()
    assert body["progress"]["step"] == 6
    metrics = body["metrics"]
    assert metrics["checkpoint_step"] == 3 and metrics["t_stars"] == [0, 500, 1000]
    fd = metrics["fd"]
    assert set(fd) == {"tuned→base", "base→tuned"}
    forward, backward = fd["tuned→base"]["1"], fd["base→tuned"]["1"]
    assert len(forward) == len(backward) == 3 and all(v >= 0 for v in forward + backward)
    # Same seed: t* = 0 of one direction and t* = T of the other are the same single model.
    assert forward[0] == pytest.approx(backward[-1]) and forward[-1] == pytest.approx(backward[0])
    assert forward[0] != pytest.approx(forward[-1])  # the tuned and the base model differ

    reports = {r["name"]: r["url"] for r in client.get(f"/v1/jobs/{probe['id']}/reports", headers=auth).json()["data"]}
    assert set(reports) == {"probe.json", "probe.png"}
    stored = json.loads(storage_bytes(storage, f"jobs/{probe['id']}/reports/probe.json"))
    assert [p["t_star"] for p in stored["curves"]["tuned→base"]["1"]] == [0, 500, 1000]
    Image.open(io.BytesIO(storage_bytes(storage, f"jobs/{probe['id']}/reports/probe.png"))).verify()
    events = [e["message"] for e in client.get(f"/v1/jobs/{probe['id']}/events?limit=100", headers=auth).json()["data"]]
    assert any("t*=500" in m for m in events)
    listed = client.get("/v1/jobs?limit=10", headers=auth).json()["data"]
    assert {j["id"]: j["kind"] for j in listed} == {tuned_job["id"]: "tune", probe["id"]: "forgetting_probe"}


def test_probe_with_domain_guidance_guides_the_tuned_steps_with_the_base(tuned_job, worker_ctx, client, auth,
                                                                       one_thread):
    """Domain Guidance changes the tuned model's guided steps only: at guidance 1 (conditional branch alone)
    and for the base alone the curves equal the CFG probe's; the tuned model at guidance 4 differs."""
    from worker.pipeline import run

    fd = {}
    for mode in ("cfg", "domain"):
        probe = _probe(client, auth, tuned_job["id"], guidance=[1, 4], guidance_mode=mode).json()
        assert probe["hyperparameters"]["guidance_mode"] == mode
        assert run(probe["id"]) == "succeeded", client.get(f"/v1/jobs/{probe['id']}", headers=auth).json()["error"]
        fd[mode] = client.get(f"/v1/jobs/{probe['id']}", headers=auth).json()["metrics"]["fd"]["tuned→base"]
    assert fd["domain"]["1"] == pytest.approx(fd["cfg"]["1"])
    assert fd["domain"]["4"][-1] == pytest.approx(fd["cfg"]["4"][-1])  # t* = T: the base alone
    assert fd["domain"]["4"][0] != pytest.approx(fd["cfg"]["4"][0])  # t* = 0: the tuned model alone


def storage_bytes(storage, key: str) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f"
        storage.get_file(key, path)
        return path.read_bytes()


def test_probe_defaults_to_the_latest_checkpoint_and_replays_its_idempotency_key(tuned_job, client, auth):
    headers = {**auth, "Idempotency-Key": "probe-1"}
    first = client.post(f"/v1/jobs/{tuned_job['id']}/forgetting-probes", headers=headers, json=PROBE)
    again = client.post(f"/v1/jobs/{tuned_job['id']}/forgetting-probes", headers=headers, json=PROBE)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["hyperparameters"]["checkpoint_step"] == 6


def test_bad_probe_requests_name_the_field(tuned_job, make_job, client, auth, other_auth, archives):
    def problem(job_id, headers=auth, **body):
        response = _probe(client, headers, job_id, **body)
        assert response.headers["content-type"].startswith("application/problem+json"), response.text
        return response.status_code, response.json()

    status, body = problem(tuned_job["id"], checkpoint_step=4)
    assert status == 422 and body["errors"][0]["field"] == "checkpoint_step" and "[3, 6]" in body["detail"]
    untrained = make_job()
    status, body = problem(untrained["id"])
    assert status == 422 and body["errors"][0]["field"] == "job" and "no published checkpoint" in body["detail"]
    status, body = problem(tuned_job["id"], points=1)
    assert status == 422 and "points" in json.dumps(body)
    status, body = problem(tuned_job["id"], guidance_mode="base")
    assert status == 422 and "guidance_mode" in json.dumps(body)
    status, body = problem(tuned_job["id"], dataset="ds_missing")
    assert status == 422 and body["errors"][0]["field"] == "dataset"
    captioned = client.post("/v1/datasets", headers=auth,
                            files={"file": ("c.zip", archives.zip(archives.captioned(n=2)))}).json()
    status, body = problem(tuned_job["id"], dataset=captioned["id"])
    assert status == 422 and body["errors"][0]["field"] == "dataset" and "class folders" in body["detail"]
    status, _ = problem(tuned_job["id"], headers=other_auth)
    assert status == 404  # another tenant's job does not exist for them
    probe = _probe(client, auth, tuned_job["id"]).json()
    status, body = problem(probe["id"])
    assert status == 422 and "probe a tuning job" in body["detail"]


def test_cancelling_a_running_probe_stops_it_between_points(tuned_job, worker_ctx, client, auth, storage,
                                                            monkeypatch, one_thread):
    from core.services import jobs
    from worker.pipeline import run

    probe = _probe(client, auth, tuned_job["id"]).json()
    original = jobs.update_progress

    def cancel_after_the_first_point(session, **kwargs):
        client.post(f"/v1/jobs/{probe['id']}/cancel", headers=auth)
        return original(session, **kwargs)

    monkeypatch.setattr(jobs, "update_progress", cancel_after_the_first_point)
    assert run(probe["id"]) == "cancelled"
    body = client.get(f"/v1/jobs/{probe['id']}", headers=auth).json()
    assert body["status"] == "cancelled" and body["progress"]["step"] == 1
    assert storage.list(f"jobs/{probe['id']}/reports/") == []  # nothing half-published
