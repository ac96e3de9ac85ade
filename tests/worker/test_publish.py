"""Publishing outputs: checkpoints the trainer pruned are pruned from storage and rows too, and
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


def test_checkpoints_the_trainer_pruned_are_deleted_from_storage_and_rows(make_job, worker_ctx, db, tmp_path):
    import shutil

    from worker.publish import Publisher

    job = make_job()["id"]
    publish = Publisher(worker_ctx, job)
    for step in (2, 4):
        publish("checkpoint", step, local_checkpoint(tmp_path, step))
    assert outputs.checkpoint_steps(db, job_id=job) == [2, 4]
    shutil.rmtree(tmp_path / "checkpoints" / step_name(2))  # keep_checkpoints=2: the trainer dropped step 2
    publish("checkpoint", 6, local_checkpoint(tmp_path, 6))
    db.expire_all()
    assert outputs.checkpoint_steps(db, job_id=job) == [4, 6]
    assert worker_ctx.storage.list(checkpoint_prefix(job, 2)) == []
    assert worker_ctx.storage.list(checkpoint_prefix(job, 4)) == [checkpoint_prefix(job, 4) + "meta.json",
                                                                 checkpoint_prefix(job, 4) + "unet/weights.bin"]
    rows = outputs.list_checkpoints(db, job_id=job).data
    assert [(c.step, c.metrics) for c in rows] == [(4, {"loss": 0.4}), (6, {"loss": 0.6})]


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
