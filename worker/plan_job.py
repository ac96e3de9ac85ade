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

    from models.oom import suggestions
    from models.plan import GB, plan_memory
    from worker.pipeline import build_config

    inputs = fetch_inputs(ctx, job)
    config = build_config(job, inputs.base_location)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpus = int((job.resources or {}).get("gpus") or 1)
    change = "; ".join(suggestions(config, "train"))
    lease.event(f"measuring one training step on {device} (batch {config.batch_size // gpus} per GPU)")
    try:
        plan = plan_memory(config, inputs.data_dir, device=device, cache_dir=ctx.cache_dir / "ml", processes=gpus,
                           budget_gb=ctx.settings.worker_gpu_memory_gb)
    except torch.OutOfMemoryError:
        raise ValueError(f"does not fit: one training step ran out of memory on this worker's {device}; "
                         f"change one of: {change}") from None
    if plan.fits is False:
        raise ValueError(f"does not fit: one training step needs {plan.total / GB:.2f} GB of the worker's "
                         f"{plan.budget / GB:.2f} GB; change one of: {change}")
    return {"stopped": False, "step": 1, "metrics": {"memory_plan": plan.as_dict()}}
