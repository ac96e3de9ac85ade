"""A job that starts from another job's checkpoint (``resume_from``): the way back after an
out-of-memory failure, a cancel, or to train a finished job further with changed settings.

The new job must continue the same run: same base model, dataset and GPU count, and the same
fields that shape the trained weights and the optimizer state; everything else (batch size,
resolution, memory savers, max_steps, learning rate …) may change.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.enums import JobKind, JobStatus
from core.errors import InvalidError
from core.services.common import referenced
from core.services.outputs import checkpoint_steps
from core.tables import Job

FIELD = "resume_from"
# Fields whose change would make the checkpoint's weights or optimizer state not fit the new run.
STATE_FIELDS = ("peft", "lora_rank", "lora_alpha", "lora_target_modules", "optimizer")


def resume_point(session: Session, *, tenant_id: str, source_id: str, base_model_id: str, dataset_id: str,
                 config: dict[str, Any], gpus: int) -> dict[str, Any]:
    """``{"job_id", "step"}`` of the checkpoint a new job starts from, or a 422 naming what differs."""
    source = referenced(session, Job, source_id, tenant_id=tenant_id, kind="job", field=FIELD)
    if source.kind != JobKind.TUNE:
        raise InvalidError.field(FIELD, f"{source.id} is a {source.kind} job; resume from a tuning job")
    if source.status not in JobStatus.terminal():
        raise InvalidError.field(FIELD, f"{source.id} is {source.status}; resume from a finished job "
                                        "(cancel it first to take over its last checkpoint)")
    steps = checkpoint_steps(session, job_id=source.id)
    if not steps:
        raise InvalidError.field(FIELD, f"{source.id} published no checkpoint to resume from")
    if (source.base_model_id, source.dataset_id) != (base_model_id, dataset_id):
        raise InvalidError.field(FIELD, f"{source.id} trained base model {source.base_model_id} on dataset "
                                        f"{source.dataset_id}; a resumed job uses the same ones")
    if source.gpus != gpus:
        raise InvalidError.field("resources.gpus", f"{source.id} ran on {source.gpus} GPUs; a resumed job "
                                                   f"runs on as many (not {gpus})")
    for name in STATE_FIELDS:
        before, after = source.hyperparameters.get(name), config.get(name)
        if before != after:
            raise InvalidError.field(f"hyperparameters.{name}", f"{after!r} differs from {source.id}'s {before!r}; "
                                                                "its checkpoint holds state for that value")
    if config["max_steps"] <= steps[-1]:
        raise InvalidError.field("hyperparameters.max_steps", f"{config['max_steps']} but {source.id}'s last "
                                                              f"checkpoint is at step {steps[-1]}; ask for more")
    return {"job_id": source.id, "step": steps[-1]}
