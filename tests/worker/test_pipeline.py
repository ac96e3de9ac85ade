"""The job pipeline in-process: claim, fetch from S3, train, publish, statuses and errors."""

from __future__ import annotations

import pytest
from diffusers import DiTPipeline

from core.services import jobs
from core.tables import Job


def test_job_runs_publishes_and_succeeds(make_job, worker_ctx, client, auth, storage, tmp_path):
    from worker.pipeline import run

    job = make_job(report_to=["tensorboard"])
    status = run(job["id"])
    body = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert status == "succeeded", body["error"]
    reports = [r["name"] for r in client.get(f"/v1/jobs/{job['id']}/reports", headers=auth).json()["data"]]
    assert any(name.startswith("tensorboard/events.out.tfevents") for name in reports), reports
    assert run(job["id"]) == "skipped"  # a duplicate delivery claims nothing
    body = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert body["status"] == "succeeded"
    assert body["progress"]["step"] == 6 and body["progress"]["total_steps"] == 6
    assert body["metrics"]["loss_bank"] is not None
    series = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth).json()  # every logged step (log_every 1)
    assert [p["step"] for p in series["data"]] == [1, 2, 3, 4, 5, 6]
    assert all(p["loss_bank"] is not None and p["images_per_sec"] > 0 for p in series["data"])
    assert series["data"][-1]["loss"] == pytest.approx(body["metrics"]["loss"])
    checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()["data"]
    assert [c["step"] for c in checkpoints] == [3, 6]
    samples = client.get(f"/v1/jobs/{job['id']}/samples", headers=auth).json()["data"]
    assert [s["step"] for s in samples] == [6]
    prefix = f"jobs/{job['id']}/checkpoints/step_0000006/"
    keys = storage.list(prefix)
    assert prefix + "model_index.json" in keys and prefix + "trainer_state/state.safetensors" in keys
    for key in keys:
        target = tmp_path / "dl" / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.get_file(key, target)
    pipe = DiTPipeline.from_pretrained(tmp_path / "dl")
    assert pipe.labels == {"class_0": 0, "class_1": 1}
    events = [e["message"] for e in client.get(f"/v1/jobs/{job['id']}/events?limit=100", headers=auth).json()["data"]]
    assert any("knowledge bank" in m for m in events) and any(m.startswith("step 6/6") for m in events)


def test_bad_hyperparameters_for_the_model_fail_with_a_message(make_job, worker_ctx, client, auth):
    from worker.pipeline import run

    job = make_job(resolution=32, upscale_small_images=True)  # the tiny base model generates 16 px images
    assert run(job["id"]) == "failed"
    body = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert body["status"] == "failed" and "resolution" in body["error"] and "16px" in body["error"]


def test_bad_images_fail_naming_the_file_inside_the_dataset(make_job, worker_ctx, client, auth, db):
    """The API now refuses this at POST time; a job stored before that rule still fails clearly."""
    from core.tables import Job
    from worker.pipeline import run

    job = make_job()
    row = db.get(Job, job["id"])
    row.hyperparameters = {**row.hyperparameters, "resolution": 32}  # the uploaded images are 16 px
    db.commit()
    assert run(job["id"]) == "failed"
    error = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["error"]
    assert "class_0/img_0.png: image is 16x16, smaller than the training resolution 32" in error
    assert str(worker_ctx.cache_dir) not in error  # paths are shown relative to the dataset


def test_cancel_requested_while_running_stops_and_keeps_a_checkpoint(make_job, worker_ctx, db, client, auth):
    from worker import pipeline

    job = make_job(max_steps=200, checkpoint_every=1000, sample_every=1000)
    original = pipeline.Reporter.progress

    def progress_then_cancel(self, p):
        original(self, p)
        if p.step == 2:
            client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
            self.lease.status = "cancelling"  # as the next heartbeat would learn

    pipeline.Reporter.progress = progress_then_cancel
    try:
        assert pipeline.run(job["id"]) == "cancelled"
    finally:
        pipeline.Reporter.progress = original
    checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()["data"]
    assert [c["step"] for c in checkpoints] == [2]
    row = db.get(Job, job["id"], populate_existing=True)
    assert (row.status, row.step) == ("cancelled", 2)  # progress says where it stopped


def test_transient_storage_error_requeues_for_retry(make_job, worker_ctx, db, monkeypatch):
    from core.storage import StorageError
    from worker import inputs, pipeline

    job = make_job()

    def broken(*_a, **_k):
        raise StorageError("S3 unavailable")

    monkeypatch.setattr(inputs, "fetch_dataset", broken)
    with pytest.raises(pipeline.TransientError, match="S3 unavailable"):
        pipeline.run(job["id"])
    row = db.get(Job, job["id"], populate_existing=True)
    assert row.status == "queued" and row.attempts == 1
    assert jobs.claim(db, job_id=job["id"], worker="w2") is not None  # claimable again by the retry


@pytest.mark.slow
@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_multi_gpu_job_runs_under_torchrun(make_job, worker_ctx, client, auth, db, parallelism):
    """resources.gpus = 2 trains under torchrun (gloo on CPU here), replicated or sharded (FSDP2);
    rank 0 reports and publishes."""
    import json

    from worker.pipeline import job_dir, run

    job = make_job(parallelism=parallelism)
    db.query(Job).filter(Job.id == job["id"]).update({"resources": {"gpus": 2}})
    db.commit()
    status = run(job["id"])
    body = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert status == "succeeded", body["error"]
    meta = json.loads((job_dir(worker_ctx, job["id"]) / "run" / "checkpoints" / "step_0000006" / "meta.json").read_text())
    assert meta["world_size"] == 2
    assert [c["step"] for c in client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()["data"]] == [3, 6]
