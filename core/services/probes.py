"""Forgetting-probe jobs: the chain-of-forgetting probe run by a worker on a tuned job's checkpoint.

A probe is a job of kind ``forgetting_probe``: it goes through the same queue, claiming, heartbeat,
cancellation and events as a tuning job. Its parameters live in ``hyperparameters``; its results
are the job's ``metrics`` (FD per swap step) and report files (``probe.json``, ``probe.png``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from contract.families import Conditioning, DatasetLayout, family_of_api_name
from core.enums import JobKind, JobStatus
from core.errors import InvalidError
from core.ids import new_id
from core.services import idempotency, jobs, outputs
from core.services.common import referenced
from core.tables import Dataset, Job, RegisteredModel

KIND = JobKind.FORGETTING_PROBE
SCOPE = "probes"
DIRECTIONS = 2  # tuned→base and base→tuned


def _checkpoint_step(session: Session, tuned: Job, wanted: int | None) -> int:
    steps = outputs.checkpoint_steps(session, job_id=tuned.id)
    if not steps:
        raise InvalidError.field("job", f"{tuned.id} has no published checkpoint yet")
    if wanted is None:
        return steps[-1]
    if wanted not in steps:
        raise InvalidError.field("checkpoint_step", f"{tuned.id} has no checkpoint at step {wanted} (has {steps})")
    return wanted


def create_forgetting_probe(
    session: Session,
    *,
    tenant_id: str,
    job_id: str,
    checkpoint_step: int | None = None,
    dataset_id: str | None = None,
    points: int = 11,
    samples_per_class: int = 20,
    guidance: list[float] | None = None,
    sample_steps: int = 25,
    seed: int = 0,
    guidance_mode: str = "cfg",
    metadata: dict[str, str] | None = None,
    max_queued: int | None = None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> Job:
    """Validate and commit a ``queued`` probe of ``job_id``'s checkpoint (default: its latest)."""
    request = idempotency.Request(session, tenant_id, SCOPE, idempotency_key, fingerprint)
    if earlier := request.earlier():
        return jobs.get(session, tenant_id=tenant_id, job_id=earlier)
    tuned = jobs.get(session, tenant_id=tenant_id, job_id=job_id)
    if tuned.kind != JobKind.TUNE:
        raise InvalidError.field("job", f"{tuned.id} is a {tuned.kind} job; probe a tuning job")
    model = session.get(RegisteredModel, tuned.base_model_id) if tuned.base_model_id else None
    if model is None:
        raise InvalidError.field("job", f"the base model of {tuned.id} was deleted")
    if family_of_api_name(model.family).conditioning is not Conditioning.CLASS_LABEL:
        raise InvalidError.field("job", f"the forgetting probe supports class-conditional models, not {model.family}")
    step = _checkpoint_step(session, tuned, checkpoint_step)
    dataset = referenced(session, Dataset, dataset_id or tuned.dataset_id, tenant_id=tenant_id, kind="dataset",
                         field="dataset")
    if dataset.layout != DatasetLayout.CLASS_FOLDERS:
        raise InvalidError.field("dataset", f"the probe scores against class folders, not {dataset.layout}")
    guidance = guidance or [1.0]
    parameters: dict[str, Any] = {
        "tuned_job": tuned.id, "checkpoint_step": step, "points": points, "samples_per_class": samples_per_class,
        "guidance": guidance, "sample_steps": sample_steps, "seed": seed, "guidance_mode": guidance_mode,
    }
    job = Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        kind=KIND,
        base_model_id=model.id,
        dataset_id=dataset.id,
        method=tuned.method,
        status=JobStatus.QUEUED,
        hyperparameters=parameters,
        validation_prompts=None,
        seed=seed,
        metadata_={**(metadata or {})},
        resources={"gpus": 1},
        total_steps=DIRECTIONS * len(guidance) * points,
    )
    return jobs.insert(session, job, request, max_queued=max_queued)
