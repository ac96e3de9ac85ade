"""A claimed job's inputs: its dataset and base-model rows, fetched to the worker's disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.tables import Dataset, Job, RegisteredModel
from worker.context import WorkerContext
from worker.fetch import InputError, fetch_base_model, fetch_dataset


@dataclass(frozen=True)
class JobInputs:
    """The rows a job refers to and where their files are on this worker."""

    dataset: Dataset
    base_model: RegisteredModel
    data_dir: Path  # the dataset's files, as the library reads them
    base_location: str  # a local folder the model family can ``from_pretrained``


def fetch_inputs(ctx: WorkerContext, job: Job) -> JobInputs:
    """Load the job's dataset and base model rows and bring both to local disk (cached)."""
    with ctx.sessions() as session:
        dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
        base_model = session.get(RegisteredModel, job.base_model_id) if job.base_model_id else None
    if dataset is None or base_model is None:
        raise InputError(f"the dataset or base model of {job.id} was deleted")
    return JobInputs(dataset, base_model, fetch_dataset(ctx, dataset), fetch_base_model(ctx, base_model))
