"""Publishing outputs: the newest ``keep_checkpoints`` stay published (also across a resume), and
no step list is capped at one page."""

from __future__ import annotations

import json
from pathlib import Path

from contract.outputs import step_name
from core.services import outputs
from core.storage.keys import checkpoint_prefix


def local_checkpoint(out: Path, step: int) -> Path:
    folder = out / "checkpoints" / step_name(step)
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "weights.bin").write_bytes(bytes([step]))
    (folder / "meta.json").write_text(json.dumps({"step": step, "metrics": {"loss": step / 10}}))
    return folder


def test_only_the_newest_keep_checkpoints_stay_published(make_job, worker_ctx, db, tmp_path):
    from worker.publish import Publisher

    job = make_job()["id"]
    publish = Publisher(worker_ctx, job, keep=2)
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
    for step in (2, 4):
        Publisher(worker_ctx, job, keep=3)("checkpoint", step, local_checkpoint(tmp_path / "first", step))
    resumed = tmp_path / "second"  # a new worker: only step 4 was restored
    local_checkpoint(resumed, 4)
    Publisher(worker_ctx, job, keep=3)("checkpoint", 6, local_checkpoint(resumed, 6))
    db.expire_all()
    assert outputs.checkpoint_steps(db, job_id=job) == [2, 4, 6]
    assert worker_ctx.storage.list(checkpoint_prefix(job, 2)) != []


def test_more_than_a_page_of_checkpoints_is_seen_whole(make_job, worker_ctx, db, tmp_path):
    from worker.publish import restore_latest

    job = make_job()["id"]
    for step in range(1, 131):
        outputs.create_checkpoint(db, job_id=job, step=step)
    assert outputs.checkpoint_steps(db, job_id=job) == list(range(1, 131))
    worker_ctx.storage.put_file(checkpoint_prefix(job, 130) + "meta.json",
                                local_checkpoint(tmp_path / "src", 130) / "meta.json")
    assert restore_latest(worker_ctx, job, tmp_path / "run") == 130  # not 100, the last of the first page
    assert (tmp_path / "run" / "checkpoints" / step_name(130) / "meta.json").exists()
