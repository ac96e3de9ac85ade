"""One job, end to end: claim → fetch → train (with progress, artifacts, cancellation) → outcome.

Errors in the user's data or configuration fail the job with their message. Storage and database
outages are transient: the job goes back to ``queued`` and the task retries (bounded), resuming from
the last published checkpoint. A job that asks for several GPUs trains under torchrun on this host.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from contract.train_config import TrainConfig, dump_config
from core.enums import JobKind, JobStatus
from core.services import base_models, job_events, jobs
from core.storage import StorageError
from core.tables import Job
from worker.context import WorkerContext, context
from worker.inputs import fetch_inputs
from worker.publish import Publisher, restore_latest

log = logging.getLogger(__name__)
TRANSIENT = (StorageError, OperationalError, ConnectionError)
PROGRESS_EVERY_S = 5.0


class TransientError(RuntimeError):
    """An outage (storage, database) that a retry may get past."""


# ----------------------------------------------------------------------------------------------
# Liveness and progress
# ----------------------------------------------------------------------------------------------


class Heartbeat(threading.Thread):
    """Beats the job row every ``interval`` seconds and remembers its status (cancellation)."""

    def __init__(self, ctx: WorkerContext, job_id: str, interval: float):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.ctx, self.job_id, self.interval = ctx, job_id, interval
        self.status: str | None = JobStatus.RUNNING
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                with self.ctx.sessions() as session:
                    self.status = jobs.heartbeat(session, job_id=self.job_id)
            except Exception:  # noqa: BLE001 - keep beating through database hiccups
                log.exception("heartbeat of %s failed", self.job_id)

    def stop(self) -> None:
        self._stop_event.set()


class Reporter:
    """Turns trainer callbacks into throttled progress rows and events; answers ``should_stop``."""

    def __init__(self, ctx: WorkerContext, job_id: str, heartbeat: Heartbeat | None = None):
        self.ctx, self.job_id, self.heartbeat = ctx, job_id, heartbeat
        self.status: str | None = JobStatus.RUNNING
        self.last: dict[str, Any] | None = None
        self._last_write = 0.0
        self._phases: set[str] = set()

    def event(self, message: str, **data: Any) -> None:
        with self.ctx.sessions() as session:
            job_events.create(session, job_id=self.job_id, message=message, data=data or None)

    def phase(self, name: str, done: int, total: int) -> None:
        if name not in self._phases:
            self._phases.add(name)
            self.event({"bank": f"generating the knowledge bank ({total} images)",
                        "encode": f"encoding {total} images to latents"}.get(name, name), total=total)

    def progress(self, p) -> None:
        self.last = p.as_dict()
        now = time.monotonic()
        if now - self._last_write < PROGRESS_EVERY_S and p.step < p.total_steps:
            return
        self._last_write = now
        bank = f", bank {p.loss_bank:.4f}" if p.loss_bank is not None else ""
        with self.ctx.sessions() as session:
            self.status = jobs.update_progress(
                session, job_id=self.job_id, step=p.step, total_steps=p.total_steps, eta_seconds=p.eta_seconds,
                metrics=self.last, message=f"step {p.step}/{p.total_steps}: loss {p.loss:.4f}{bank}")

    def should_stop(self) -> bool:
        status = self.heartbeat.status if self.heartbeat else self.status
        return JobStatus.CANCELLING in (status, self.status)


# ----------------------------------------------------------------------------------------------
# Inputs and config
# ----------------------------------------------------------------------------------------------


def build_config(job: Job, base_location: str) -> TrainConfig:
    """The job's stored TrainConfig (complete and validated at POST time) pointing at the fetched base model.

    The stored ``base_model`` names the registered model (``bm_…``); only its location is local.
    """
    return TrainConfig.model_validate({**job.hyperparameters, "base_model": base_location})


@dataclass(frozen=True)
class TrainSpec:
    """What one training process needs; written once as JSON for torchrun ranks."""

    config: TrainConfig
    data_dir: str
    out_dir: str
    device: str | None = None

    def to_json(self) -> str:
        return json.dumps({"config": dump_config(self.config), "data_dir": self.data_dir,
                           "out_dir": self.out_dir, "device": self.device})

    @classmethod
    def from_json(cls, text: str) -> TrainSpec:
        data = json.loads(text)
        return cls(config=TrainConfig.model_validate(data.pop("config")), **data)


def job_dir(ctx: WorkerContext, job_id: str) -> Path:
    return ctx.cache_dir / "jobs" / job_id


# ----------------------------------------------------------------------------------------------
# Training (in this process, or in each torchrun rank)
# ----------------------------------------------------------------------------------------------


def train(ctx: WorkerContext, job_id: str, spec: TrainSpec, *, heartbeat: Heartbeat | None = None) -> dict:
    """Run the trainer for a claimed job; rank 0 reports and publishes. Returns the outcome."""
    from models.distributed import init_distributed
    from models.run import run_training

    dist = init_distributed(spec.device)
    reporter = Reporter(ctx, job_id, heartbeat)
    main = dist.is_main
    result = run_training(
        spec.config, data_dir=spec.data_dir, out_dir=spec.out_dir,
        cache_dir=ctx.cache_dir / "ml", resume=True, dist=dist,
        on_phase=reporter.phase if main else None, on_progress=reporter.progress,
        on_artifact=Publisher(ctx, job_id, keep=spec.config.keep_checkpoints) if main else None, should_stop=reporter.should_stop)
    return {"step": result.fit.step, "stopped": result.fit.stopped, "metrics": reporter.last}


def _train_with_torchrun(job_id: str, spec: TrainSpec, gpus: int, out_dir: Path) -> dict:
    spec_file = out_dir / "spec.json"
    spec_file.write_text(spec.to_json())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
           "-m", "worker.train_entry", job_id, str(spec_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"torchrun with {gpus} processes failed (exit {proc.returncode}): {tail}")
    return json.loads((out_dir / "outcome.json").read_text())


# ----------------------------------------------------------------------------------------------
# The task body
# ----------------------------------------------------------------------------------------------


def _execute(ctx: WorkerContext, job: Job, heartbeat: Heartbeat) -> dict:
    if job.kind == JobKind.FORGETTING_PROBE:
        from worker.probe_job import execute_probe

        return execute_probe(ctx, job, lambda: heartbeat.status)
    reporter = Reporter(ctx, job.id)
    inputs = fetch_inputs(ctx, job)
    config = build_config(job, inputs.base_location)
    out_dir = job_dir(ctx, job.id) / "run"
    out_dir.mkdir(parents=True, exist_ok=True)
    resumed = restore_latest(ctx, job.id, out_dir)
    dataset = inputs.dataset
    reporter.event(f"inputs ready: dataset {dataset.id} ({dataset.num_images} images), base model "
                   f"{inputs.base_model.id}" + (f"; resuming from step {resumed}" if resumed else ""),
                   resumed_from=resumed)
    spec = TrainSpec(config=config, data_dir=str(inputs.data_dir), out_dir=str(out_dir))
    gpus = int((job.resources or {}).get("gpus") or 1)
    if gpus > 1:
        return _train_with_torchrun(job.id, spec, gpus, out_dir)
    return train(ctx, job.id, spec, heartbeat=heartbeat)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run(job_id: str) -> str:
    """Claim and run ``job_id``; returns the final status (or 'skipped' when not claimable)."""
    ctx = context()
    with ctx.sessions() as session:
        job = jobs.claim(session, job_id=job_id, worker=_worker_name())
    if job is None:
        log.info("job %s is not queued; nothing to do", job_id)
        return "skipped"
    heartbeat = Heartbeat(ctx, job_id, interval=max(1.0, min(30.0, ctx.settings.heartbeat_timeout / 4)))
    heartbeat.start()
    try:
        outcome = _execute(ctx, job, heartbeat)
    except TRANSIENT as err:
        with ctx.sessions() as session:
            jobs.release(session, job_id=job_id, reason=f"transient error, retrying: {err}")
        raise TransientError(str(err)) from err
    except ValueError as err:  # bad data or configuration: DatasetError, ConfigError, InputError, ...
        return _fail(ctx, job_id, str(err))
    except Exception as err:  # noqa: BLE001 - any crash must end the job with a message
        log.exception("job %s crashed", job_id)
        return _fail(ctx, job_id, f"internal error: {type(err).__name__}: {err}")
    finally:
        heartbeat.stop()
    with ctx.sessions() as session:
        if outcome["stopped"]:
            jobs.mark_cancelled(session, job_id=job_id)
            return JobStatus.CANCELLED
        jobs.mark_succeeded(session, job_id=job_id, metrics=outcome.get("metrics"))
        if job.base_model_id:
            base_models.mark_ready(session, base_model_id=job.base_model_id)  # it demonstrably loads
    return JobStatus.SUCCEEDED


def _fail(ctx: WorkerContext, job_id: str, message: str) -> str:
    """Mark the job failed; worker-local dataset paths are shown relative to the dataset."""
    message = re.sub(re.escape(str(ctx.cache_dir / "datasets")) + r"/[^/]+/files/", "", message)
    with ctx.sessions() as session:
        jobs.mark_failed(session, job_id=job_id, error=message)
    return JobStatus.FAILED
