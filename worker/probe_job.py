"""A forgetting-probe job: fetch the base model, the tuned checkpoint and the real images, run the
library's probe, publish ``probe.json`` and ``probe.png`` as the job's reports."""

from __future__ import annotations

import time
from typing import Any

from contract.outputs import step_name
from core.storage.keys import report_key
from core.tables import Job
from worker.context import WorkerContext
from worker.fetch import InputError
from worker.inputs import fetch_inputs
from worker.lease import Lease
from worker.publish import download_checkpoint


class _Cancelled(Exception):
    """Raised from the per-point callback when the job is being cancelled."""


def _summary(result: dict[str, Any], step: int) -> dict[str, Any]:
    """The job's metrics: FD (and class fidelity) per swap step, per direction and guidance."""
    def column(points, name):
        return [round(p[name], 5) for p in points]

    return {"checkpoint_step": step, "t_stars": result["t_stars"],
            "fd": {d: {g: column(pts, "fd") for g, pts in by_g.items()} for d, by_g in result["curves"].items()},
            "class_fidelity": {d: {g: column(pts, "class_fidelity") for g, pts in by_g.items()}
                               for d, by_g in result["curves"].items()}}


def execute_probe(ctx: WorkerContext, job: Job, lease: Lease) -> dict[str, Any]:
    """Run the probe for a claimed job, writing only under its ``lease`` (cancellation stops it)."""
    import torch

    from models.probe import run_probe

    params = job.hyperparameters
    inputs = fetch_inputs(ctx, job)
    data_dir, base = inputs.data_dir, inputs.base_location
    work = ctx.cache_dir / "jobs" / job.id
    step = int(params["checkpoint_step"])
    try:
        tuned = download_checkpoint(ctx, params["tuned_job"], step, work / "tuned" / step_name(step))
    except FileNotFoundError as err:
        raise InputError(f"{err} (pruned by keep_checkpoints?); probe another checkpoint_step") from None
    done, start = 0, time.monotonic()

    def on_point(line: str) -> None:
        nonlocal done
        done += 1
        eta = (time.monotonic() - start) / done * (job.total_steps - done)
        lease.progress(step=done, total_steps=job.total_steps, eta_seconds=eta, message=line)
        if lease.should_stop():
            raise _Cancelled

    def say(line: str) -> None:
        lease.event(line)

    out = work / "probe"
    try:
        result = run_probe(base, tuned, data_dir, out, points=params["points"],
                           per_class=params["samples_per_class"], guidances=tuple(params["guidance"]),
                           steps=params["sample_steps"], seed=params["seed"],
                           guidance_mode=params.get("guidance_mode", "cfg"),
                           device="cuda" if torch.cuda.is_available() else "cpu", say=say, on_point=on_point)
    except _Cancelled:
        return {"stopped": True}
    if not lease.held():
        return {"stopped": True}
    for name, content_type in (("probe.json", "application/json"), ("probe.png", "image/png")):
        ctx.storage.put_file(report_key(job.id, name), out / name, content_type=content_type)
    return {"stopped": False, "step": done, "metrics": _summary(result, step)}
