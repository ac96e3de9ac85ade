"""A memory-plan job (``POST /v1/jobs`` with ``dry_run``): one real step of the tuning job it describes,
on this worker, measured by part (``models/plan.py``); it fails naming the settings to change when the
step does not fit the worker's GPU (``DIFFTUNE_WORKER_GPU_MEMORY_GB`` or the device's memory)."""

from __future__ import annotations

from typing import Any

from core.tables import Job
from worker.context import WorkerContext
from worker.inputs import fetch_inputs
from worker.lease import Lease


def execute_plan(ctx: WorkerContext, job: Job, lease: Lease) -> dict[str, Any]:
    import torch

    from models.plan import does_not_fit, plan_memory
    from worker.pipeline import build_config

    inputs = fetch_inputs(ctx, job)
    config = build_config(job, inputs.base_location)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lease.event(f"measuring one training step on {device} (batch {config.batch_size // job.gpus} per GPU)")
    try:
        plan = plan_memory(config, inputs.data_dir, device=device, cache_dir=ctx.cache_dir / "ml", processes=job.gpus,
                           budget_gb=ctx.settings.worker_gpu_memory_gb)
    except torch.OutOfMemoryError:
        plan = None
    if plan is None or plan.fits is False:
        raise ValueError(does_not_fit(config, plan, device))
    return {"stopped": False, "step": 1, "metrics": {"memory_plan": plan.as_dict()}}
