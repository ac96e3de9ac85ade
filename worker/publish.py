"""Publish a job's outputs at fixed keys and record them; bring the latest one back to resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sqlalchemy.orm import Session

from contract.outputs import step_name
from core.services import model_locations, outputs
from core.storage.keys import checkpoint_prefix, report_prefix, sample_key
from worker.context import WorkerContext
from worker.lease import Lease

TRACKER_DIRS = ("tensorboard", "mlflow")  # what report_to writes under the run's folder (models/trackers.py)


class Publisher:
    """Uploads checkpoints and sample grids as the trainer writes them (``on_artifact``), keeping
    the ``keep`` newest published checkpoints (the job's ``keep_checkpoints``).

    Everything happens under the job's lease: an attempt that lost it uploads and records nothing
    (one upload already under way when it was paused may still land; its row is refused)."""

    def __init__(self, ctx: WorkerContext, lease: Lease, *, keep: int):
        self.ctx, self.lease, self.job_id, self.keep = ctx, lease, lease.job_id, keep

    def __call__(self, kind: str, step: int, path: Path) -> None:
        if not self.lease.held():
            return
        if kind == "checkpoint":
            self.checkpoint(step, Path(path))
        elif kind == "samples":
            self.samples(step, Path(path))

    def checkpoint(self, step: int, folder: Path) -> None:
        """Upload every file of the folder, then record the row (the row is the commit)."""
        prefix = checkpoint_prefix(self.job_id, step)
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.ctx.storage.put_file(prefix + file.relative_to(folder).as_posix(), file)
        metrics = _read_metrics(folder)
        if self.lease.write(lambda session: outputs.create_checkpoint(session, job_id=self.job_id, step=step,
                                                                     metrics=metrics)):
            self.lease.write(self._prune)
        self.tracker_files(folder.parent.parent)

    def tracker_files(self, out_dir: Path) -> None:
        """Publish the run's TensorBoard event files and local MLflow store as the job's reports (listed
        with download links by ``GET /v1/jobs/{id}/reports``), fresh at every checkpoint."""
        for name in TRACKER_DIRS:
            for file in sorted(p for p in (out_dir / name).rglob("*") if p.is_file()):
                self.ctx.storage.put_file(report_prefix(self.job_id) + f"{name}/{file.relative_to(out_dir / name).as_posix()}",
                                          file)

    def _prune(self, session: Session) -> None:
        """Remove all but the ``keep`` newest published checkpoints (and those a registered base model
        starts from), storage first, then the row.

        Decided from what is published, not from the local folder: after a resume the worker holds
        only the newest checkpoint, and the older published ones must still be kept."""
        published = outputs.checkpoint_steps(session, job_id=self.job_id)
        pinned = model_locations.pinned_steps(session, job_id=self.job_id)  # base models start from them
        for step in (s for s in published[:-self.keep] if s not in pinned):
            self.ctx.storage.delete_prefix(checkpoint_prefix(self.job_id, step))
            outputs.delete_checkpoint(session, job_id=self.job_id, step=step)

    def samples(self, step: int, png: Path) -> None:
        self.ctx.storage.put_file(sample_key(self.job_id, step), png, content_type="image/png")
        self.lease.write(lambda session: outputs.create_sample(session, job_id=self.job_id, step=step))


def _read_metrics(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "meta.json").read_text()).get("metrics")
    except (OSError, ValueError):
        return None


def restore_latest(ctx: WorkerContext, job_id: str, out_dir: Path) -> int | None:
    """Make the newest published checkpoint available locally; return its step (None: none)."""
    with ctx.sessions() as session:
        published = outputs.checkpoint_steps(session, job_id=job_id)
    if not published:
        return None
    step = published[-1]
    download_checkpoint(ctx, job_id, step, out_dir / "checkpoints" / step_name(step))
    return step


def download_checkpoint(ctx: WorkerContext, job_id: str, step: int, local: Path) -> Path:
    """Download a published checkpoint folder to ``local`` (kept when already complete there)."""
    if (local / "meta.json").exists():
        return local
    staging = local.parent / f".restore_{local.name}"
    shutil.rmtree(staging, ignore_errors=True)
    if not ctx.storage.download_prefix(checkpoint_prefix(job_id, step), staging):
        raise FileNotFoundError(f"checkpoint step {step} of job {job_id} is no longer stored")
    shutil.rmtree(local, ignore_errors=True)
    staging.rename(local)
    return local
