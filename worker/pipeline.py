"""One job, end to end: claim → fetch → train (with progress, artifacts, cancellation) → outcome.

Errors in the user's data or configuration fail the job with their message. Storage and database
outages are transient: the job goes back to ``queued`` and the task retries (bounded), resuming from
the last published checkpoint. A job that asks for several GPUs trains under torchrun on this host;
one that asks for several hosts (``resources.nodes``) as one torchrun job over them (``worker.gang``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from contract.outputs import step_name
from contract.train_config import TrainConfig, dump_config
from core.enums import JobKind, JobStatus
from core.queue import enqueue_job
from core.services import base_models, jobs
from core.storage import StorageError
from core.tables import Job
from models.oom import OutOfMemory
from worker.context import WorkerContext, context
from worker.inputs import fetch_inputs
from worker.lease import Heartbeat, Lease
from worker.publish import Publisher, download_checkpoint, restore_latest
from worker.shutdown import shutdown_marker, shutdown_requested

log = logging.getLogger(__name__)
TRANSIENT = (StorageError, OperationalError, ConnectionError)
PROGRESS_EVERY_S = 5.0


class TransientError(RuntimeError):
    """An outage (storage, database) that a retry may get past."""


class GangError(RuntimeError):
    """A multi-node job's hosts could not be had in time, or one failed or stopped answering (the job
    fails with this message)."""


# ----------------------------------------------------------------------------------------------
# Liveness and progress
# ----------------------------------------------------------------------------------------------


class Reporter:
    """Turns trainer callbacks into throttled progress rows and events under the job's lease;
    answers ``should_stop`` (cancelled, lease lost, or the worker is shutting down)."""

    def __init__(self, lease: Lease, marker: Path | None = None):
        self.lease, self.marker = lease, marker
        self.last: dict[str, Any] | None = None
        self._last_write = 0.0
        self._phases: set[str] = set()

    def event(self, message: str, **data: Any) -> None:
        self.lease.event(message, **data)

    def phase(self, name: str, done: int, total: int) -> None:
        if name not in self._phases:
            self._phases.add(name)
            self.event({"bank": f"generating the knowledge bank ({total} images)",
                        "encode": f"encoding {total} images to latents"}.get(name, name), total=total)

    def progress(self, p) -> None:
        """Every logged step joins the metrics history; progress rows and events are throttled."""
        self.last = p.as_dict()
        self.lease.record_metrics(p.step, self.last)
        now = time.monotonic()
        if now - self._last_write < PROGRESS_EVERY_S and p.step < p.total_steps:
            return
        self._last_write = now
        bank = f", bank {p.loss_bank:.4f}" if p.loss_bank is not None else ""
        self.lease.progress(step=p.step, total_steps=p.total_steps, eta_seconds=p.eta_seconds, metrics=self.last,
                            message=f"step {p.step}/{p.total_steps}: loss {p.loss:.4f}{bank}")

    def should_stop(self) -> bool:
        return self.lease.should_stop() or shutdown_requested(self.marker)


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
    attempt: int
    device: str | None = None
    nodes: int = 1  # hosts of the torchrun job; above 1 rank 0 leaves the outcome in the database

    def to_json(self) -> str:
        return json.dumps({"config": dump_config(self.config), "data_dir": self.data_dir,
                           "out_dir": self.out_dir, "attempt": self.attempt, "device": self.device,
                           "nodes": self.nodes})

    @classmethod
    def from_json(cls, text: str) -> TrainSpec:
        data = json.loads(text)
        return cls(config=TrainConfig.model_validate(data.pop("config")), **data)

    @property
    def shutdown_marker(self) -> Path:
        """The file that tells every process of the job that the worker is shutting down."""
        return Path(self.out_dir) / "shutting-down"


def job_dir(ctx: WorkerContext, job_id: str) -> Path:
    return ctx.cache_dir / "jobs" / job_id


# ----------------------------------------------------------------------------------------------
# Training (in this process, or in each torchrun rank)
# ----------------------------------------------------------------------------------------------


def train(ctx: WorkerContext, job_id: str, spec: TrainSpec, *, lease: Lease | None = None) -> dict:
    """Run the trainer for a claimed job; rank 0 reports and publishes, all under the lease of
    ``spec.attempt``. Returns the outcome."""
    from models.distributed import init_distributed
    from models.run import run_training

    dist = init_distributed(spec.device)
    lease = lease or Lease(ctx, job_id, spec.attempt)
    reporter = Reporter(lease, marker=spec.shutdown_marker)
    main = dist.is_main
    result = run_training(
        spec.config, data_dir=spec.data_dir, out_dir=spec.out_dir,
        cache_dir=ctx.cache_dir / "ml", resume=True, dist=dist,
        on_phase=reporter.phase if main else None, on_progress=reporter.progress,
        on_artifact=Publisher(ctx, lease, keep=spec.config.keep_checkpoints) if main else None,
        should_stop=reporter.should_stop, run_name=job_id)
    return {"step": result.fit.step, "stopped": result.fit.stopped, "metrics": reporter.last}


def _train_with_torchrun(job_id: str, spec: TrainSpec, gpus: int, out_dir: Path) -> dict:
    spec_file = out_dir / "spec.json"
    spec_file.write_text(spec.to_json())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
           "-m", "worker.train_entry", job_id, str(spec_file)]
    with shutdown_marker(spec.shutdown_marker):
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"torchrun with {gpus} processes failed (exit {proc.returncode}): {tail}")
    return json.loads((out_dir / "outcome.json").read_text())


# ----------------------------------------------------------------------------------------------
# The task body
# ----------------------------------------------------------------------------------------------


def _execute(ctx: WorkerContext, job: Job, lease: Lease) -> dict:
    if job.kind == JobKind.MEMORY_PLAN:
        from worker.plan_job import execute_plan

        return execute_plan(ctx, job, lease)
    if job.kind == JobKind.FORGETTING_PROBE:
        from worker.probe_job import execute_probe

        return execute_probe(ctx, job, lease)
    inputs = fetch_inputs(ctx, job)
    config = build_config(job, inputs.base_location)
    out_dir = job_dir(ctx, job.id) / "run"
    out_dir.mkdir(parents=True, exist_ok=True)
    resumed, origin, source = restore_latest(ctx, job.id, out_dir), "", job.id
    if resumed is None and job.resume_from:  # the first attempt starts from the other job's checkpoint
        resumed, source = int(job.resume_from["step"]), job.resume_from["job_id"]
        download_checkpoint(ctx, source, resumed, out_dir / "checkpoints" / step_name(resumed))
        origin = f" of {source}"
    dataset = inputs.dataset
    lease.event(f"inputs ready: dataset {dataset.id} ({dataset.num_images} images), base model "
                f"{inputs.base_model.id}" + (f"; resuming from step {resumed}{origin}" if resumed else ""),
                resumed_from=resumed)
    spec = TrainSpec(config=config, data_dir=str(inputs.data_dir), out_dir=str(out_dir), attempt=lease.attempt,
                     nodes=job.nodes)
    if job.nodes > 1:
        from worker.gang import lead

        return lead(ctx, job, lease, spec, checkpoint={"job_id": source, "step": resumed} if resumed else None)
    gpus = job.gpus
    if gpus > 1:
        return _train_with_torchrun(job.id, spec, gpus, out_dir)
    return train(ctx, job.id, spec, lease=lease)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat_interval(timeout: float) -> float:
    """Seconds between heartbeats: several per timeout, so one slow beat does not cost the job."""
    return max(0.5, min(30.0, timeout / 5))


def run(job_id: str) -> str:
    """Take a turn: claim the job fairest to run now (``jobs.claim_next``; ``job_id`` is the job whose
    arrival sent this turn) and run it. Returns its final status, 'skipped' when no tenant may start
    a job, 'requeued' when the worker is shutting down, or 'lost' when another attempt took it over."""
    ctx = context()
    with ctx.sessions() as session:
        job = jobs.claim_next(session, worker=worker_name(), max_running=ctx.settings.tenant_max_running_jobs)
    if job is None:
        log.info("turn of %s: no queued job may start now", job_id)
        return "skipped"
    try:
        return _run_claimed(ctx, job)
    finally:
        _pass_turn(ctx, job.tenant_id)


def _pass_turn(ctx: WorkerContext, tenant_id: str) -> None:
    """A job of this tenant left a worker: if the tenant has jobs waiting (perhaps held back by its
    running limit), give the queue a turn for them."""
    try:
        with ctx.sessions() as session:
            waiting = jobs.waiting(session, tenant_id=tenant_id)
        if waiting:
            enqueue_job(ctx.producer, waiting)
    except Exception:  # noqa: BLE001 - the reaper and later turns still cover it
        log.exception("could not pass the turn of tenant %s", tenant_id)


def _run_claimed(ctx: WorkerContext, job: Job) -> str:
    job_id = job.id
    lease = Lease(ctx, job_id, job.attempts)
    heartbeat = Heartbeat(lease, interval=heartbeat_interval(lease.timeout))
    heartbeat.start()
    try:
        outcome = _execute(ctx, job, lease)
    except TRANSIENT as err:
        with ctx.sessions() as session:
            jobs.release(session, job_id=job_id, attempt=lease.attempt, reason=f"transient error, retrying: {err}")
        raise TransientError(str(err)) from err
    except GangError as err:
        return _fail(ctx, lease, str(err))
    except OutOfMemory as err:  # its checkpoints stay published: a resubmission continues from them
        return _fail(ctx, lease, f'{err}: POST /v1/jobs with the change and "resume_from": "{job_id}" '
                                 "to continue from it")
    except ValueError as err:  # bad data or configuration: DatasetError, ConfigError, InputError, ...
        return _fail(ctx, lease, str(err))
    except Exception as err:  # noqa: BLE001 - any crash must end the job with a message
        log.exception("job %s crashed", job_id)
        return _fail(ctx, lease, f"internal error: {type(err).__name__}: {err}")
    finally:
        heartbeat.stop()
    return _finish(ctx, job, lease, outcome)


def _finish(ctx: WorkerContext, job: Job, lease: Lease, outcome: dict) -> str:
    """Record how the run ended, under the lease."""
    if lease.lost:
        return "lost"
    step = outcome.get("step")
    with ctx.sessions() as session:
        leaving = outcome.get("leaving")  # hosts of a multi-node job that are shutting down
        if outcome["stopped"] and lease.status != JobStatus.CANCELLING and (shutdown_requested() or leaving):
            who = f"a host of the job ({', '.join(leaving)}) is shutting down" if leaving else "worker shutting down"
            where = f" after a checkpoint at step {step}" if step is not None else ""
            jobs.release(session, job_id=job.id, attempt=lease.attempt, reason=f"{who}; job requeued{where}")
            return "requeued"  # run() passes the turn on for it
        if outcome["stopped"]:
            jobs.mark_cancelled(session, job_id=job.id, attempt=lease.attempt, step=step)
            return JobStatus.CANCELLED
        if not jobs.mark_succeeded(session, job_id=job.id, attempt=lease.attempt, step=step,
                                   metrics=outcome.get("metrics")):
            return "lost"
        if job.base_model_id:
            base_models.mark_ready(session, base_model_id=job.base_model_id)  # it demonstrably loads
    return JobStatus.SUCCEEDED


def _fail(ctx: WorkerContext, lease: Lease, message: str) -> str:
    """Mark the job failed under the lease; worker-local dataset paths are shown relative to the dataset."""
    message = re.sub(re.escape(str(ctx.cache_dir / "datasets")) + r"/[^/]+/files/", "", message)
    with ctx.sessions() as session:
        failed = jobs.mark_failed(session, job_id=lease.job_id, attempt=lease.attempt, error=message)
    return JobStatus.FAILED if failed else "lost"
