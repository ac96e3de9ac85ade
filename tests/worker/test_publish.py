"""Publishing outputs: the newest ``keep_checkpoints`` stay published (also across a resume), and
no step list is capped at one page."""

from __future__ import annotations

import json
from pathlib import Path

from contract.outputs import step_name
from core.services import jobs, outputs
from core.storage.keys import checkpoint_prefix


def local_checkpoint(out: Path, step: int) -> Path:
    folder = out / "checkpoints" / step_name(step)
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "weights.bin").write_bytes(bytes([step]))
    (folder / "meta.json").write_text(json.dumps({"step": step, "metrics": {"loss": step / 10}}))
    return folder


def claimed(worker_ctx, db, job: str, worker: str = "w1"):
    """The lease of a fresh claim of ``job``."""
    from worker.lease import Lease

    return Lease(worker_ctx, job, jobs.claim(db, job_id=job, worker=worker).attempts)


def test_only_the_newest_keep_checkpoints_stay_published(make_job, worker_ctx, db, tmp_path):
    from worker.publish import Publisher

    job = make_job()["id"]
    publish = Publisher(worker_ctx, claimed(worker_ctx, db, job), keep=2)
    for step in (2, 4):
        publish("checkpoint", step, local_checkpoint(tmp_path, step))
    assert outputs.checkpoint_steps(db, job_id=job) == [2, 4]
    publish("checkpoint", 6, local_checkpoint(tmp_path, 6))
    db.expire_all()
    assert outputs.checkpoint_steps(db, job_id=job) == [4, 6]
    assert worker_ctx.storage.list(checkpoint_prefix(job, 2)) == []
    assert worker_ctx.storage.list(checkpoint_prefix(job, 4)) == [checkpoint_prefix(job, 4) + "meta.json",
                                                                 checkpoint_prefix(job, 4) + "unet/weights.bin"]
    rows = outputs.list_checkpoints(db, job_id=job).data
    assert [(c.step, c.metrics) for c in rows] == [(4, {"loss": 0.4}), (6, {"loss": 0.6})]


def test_a_resumed_run_keeps_the_older_published_checkpoints(make_job, worker_ctx, db, tmp_path):
    """After a resume the worker holds only the newest checkpoint locally; the others stay published."""
    from worker.publish import Publisher

    job = make_job()["id"]
    lease = claimed(worker_ctx, db, job)
    for step in (2, 4):
        Publisher(worker_ctx, lease, keep=3)("checkpoint", step, local_checkpoint(tmp_path / "first", step))
    jobs.release(db, job_id=job, attempt=lease.attempt, reason="worker shutting down")
    resumed = tmp_path / "second"  # a new worker: only step 4 was restored
    local_checkpoint(resumed, 4)
    Publisher(worker_ctx, claimed(worker_ctx, db, job, "w2"), keep=3)("checkpoint", 6, local_checkpoint(resumed, 6))
    db.expire_all()
    assert outputs.checkpoint_steps(db, job_id=job) == [2, 4, 6]
    assert worker_ctx.storage.list(checkpoint_prefix(job, 2)) != []


def test_more_than_a_page_of_checkpoints_is_seen_whole(make_job, worker_ctx, db, tmp_path):
    from worker.publish import restore_latest

    job = make_job()["id"]
    for step in range(1, 131):
        outputs.create_checkpoint(db, job_id=job, step=step)
    db.commit()
    assert outputs.checkpoint_steps(db, job_id=job) == list(range(1, 131))
    worker_ctx.storage.put_file(checkpoint_prefix(job, 130) + "meta.json",
                                local_checkpoint(tmp_path / "src", 130) / "meta.json")
    assert restore_latest(worker_ctx, job, tmp_path / "run") == 130  # not 100, the last of the first page
    assert (tmp_path / "run" / "checkpoints" / step_name(130) / "meta.json").exists()


def test_an_attempt_that_lost_its_lease_publishes_nothing(make_job, worker_ctx, db, tmp_path):
    from worker.publish import Publisher

    job = make_job()["id"]
    first = claimed(worker_ctx, db, job)
    Publisher(worker_ctx, first, keep=2)("checkpoint", 2, local_checkpoint(tmp_path / "a", 2))
    jobs.release(db, job_id=job, attempt=first.attempt, reason="requeued")
    second = claimed(worker_ctx, db, job, "w2")
    Publisher(worker_ctx, second, keep=2)("checkpoint", 4, local_checkpoint(tmp_path / "b", 4))

    first.timeout = 0.0  # its local lease has run out: the next write asks the database
    stale = Publisher(worker_ctx, first, keep=1)
    stale("checkpoint", 50, local_checkpoint(tmp_path / "a", 50))
    stale("samples", 50, tmp_path / "a" / "checkpoints" / step_name(50) / "meta.json")
    db.expire_all()
    assert first.lost
    assert outputs.checkpoint_steps(db, job_id=job) == [2, 4]  # nothing added, nothing pruned
    assert worker_ctx.storage.list(checkpoint_prefix(job, 50)) == []
    assert worker_ctx.storage.list(f"jobs/{job}/samples/") == []
    assert outputs.list_samples(db, job_id=job).data == []


def test_a_checkpoint_a_base_model_starts_from_is_never_pruned(make_job, worker_ctx, db, client, auth, tmp_path):
    from worker.publish import Publisher

    job = make_job()["id"]
    publish = Publisher(worker_ctx, claimed(worker_ctx, db, job), keep=1)
    publish("checkpoint", 2, local_checkpoint(tmp_path, 2))
    chained = client.post("/v1/base-models", headers=auth, json={
        "name": "from step 2", "family": "dit", "location": {"kind": "checkpoint", "job_id": job, "step": 2}})
    assert chained.status_code == 201, chained.text
    for step in (4, 6):
        publish("checkpoint", step, local_checkpoint(tmp_path, step))
    db.expire_all()
    assert outputs.checkpoint_steps(db, job_id=job) == [2, 6]  # step 4 pruned, step 2 pinned
    assert worker_ctx.storage.list(checkpoint_prefix(job, 2)) != []
