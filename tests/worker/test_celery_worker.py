"""Real ``celery worker`` processes on the Redis broker: a job end to end, and a SIGKILLed worker
whose job is requeued by the heartbeat reaper and resumes from its last checkpoint."""

from __future__ import annotations

import signal

import pytest
from diffusers import DiTPipeline

from core.tables import Job

from .conftest import start_worker, wait_for, worker_env


def _status(client, auth, job_id):
    return client.get(f"/v1/jobs/{job_id}", headers=auth).json()


def _download(storage, prefix, dest):
    for key in storage.list(prefix):
        target = dest / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.get_file(key, target)
    return dest


@pytest.mark.slow
def test_upload_job_train_publish_through_a_real_worker(make_job, settings, client, auth, storage, tmp_path):
    job = make_job()
    log = tmp_path / "worker.log"
    proc = start_worker(worker_env(settings), log)
    try:
        wait_for(lambda: _status(client, auth, job["id"])["status"] in ("succeeded", "failed"), 180, "the job", log)
    finally:
        proc.terminate()
        proc.wait(30)
    body = _status(client, auth, job["id"])
    assert body["status"] == "succeeded", body["error"]
    checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()["data"]
    assert checkpoints[-1]["step"] == 6
    assert storage.list(f"jobs/{job['id']}/samples/") == [f"jobs/{job['id']}/samples/step_0000006.png"]
    pipe = DiTPipeline.from_pretrained(_download(storage, f"jobs/{job['id']}/checkpoints/step_0000006/",
                                                 tmp_path / "ckpt"))
    assert set(pipe.labels) == {"class_0", "class_1"}


@pytest.mark.slow
def test_sigkilled_worker_job_is_requeued_and_resumes(make_job, settings, client, auth, db, tmp_path):
    job = make_job(max_steps=300, checkpoint_every=25, sample_every=1000, log_every=5, keep_checkpoints=3)
    env = worker_env(settings, DIFFTUNE_HEARTBEAT_TIMEOUT="4")
    first_log, second_log = tmp_path / "w1.log", tmp_path / "w2.log"
    first = start_worker(env, first_log)

    def published_steps():
        return [c["step"] for c in client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()["data"]]

    try:
        wait_for(lambda: published_steps() and max(published_steps()) >= 50, 180, "a checkpoint", first_log)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = max(published_steps())
    assert _status(client, auth, job["id"])["status"] == "running"  # the row still says so: the worker died

    second = start_worker(env, second_log)
    try:
        wait_for(lambda: _status(client, auth, job["id"])["status"] in ("succeeded", "failed"), 240,
                 "the requeued job", second_log)
    finally:
        second.terminate()
        second.wait(30)
    body = _status(client, auth, job["id"])
    assert body["status"] == "succeeded", body["error"]
    assert db.get(Job, job["id"], populate_existing=True).attempts == 2
    events = client.get(f"/v1/jobs/{job['id']}/events?limit=100", headers=auth).json()["data"]
    messages = [e["message"] for e in events]
    assert "worker lost; job requeued" in messages
    resumed = [e["data"]["resumed_from"] for e in events if (e.get("data") or {}).get("resumed_from")]
    assert resumed and resumed[0] >= killed_at  # resumed from the last published checkpoint
    assert max(published_steps()) == 300
