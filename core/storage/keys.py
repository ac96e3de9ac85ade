"""Fixed storage keys (object names), so a rerun overwrites rather than duplicates."""

from __future__ import annotations

from contract.outputs import step_name


def dataset_prefix(dataset_id: str) -> str:
    """Everything stored for a dataset."""
    return f"datasets/{dataset_id}/"


def dataset_archive_key(dataset_id: str) -> str:
    """The normalised dataset: an uncompressed tar of the validated files."""
    return f"datasets/{dataset_id}/data.tar"


def dataset_manifest_key(dataset_id: str) -> str:
    """The dataset's manifest: layout, classes and one entry per image."""
    return f"datasets/{dataset_id}/manifest.json"


def dataset_thumbnails_key(dataset_id: str) -> str:
    """A strip of small thumbnails of the dataset's images (the dashboard shows it), made at upload."""
    return f"datasets/{dataset_id}/thumbnails.png"


def job_prefix(job_id: str) -> str:
    """Everything a job publishes."""
    return f"jobs/{job_id}/"


def checkpoint_prefix(job_id: str, step: int) -> str:
    """The diffusers folder of the checkpoint at ``step``."""
    return f"jobs/{job_id}/checkpoints/{step_name(step)}/"


def sample_key(job_id: str, step: int) -> str:
    """The sample grid drawn at ``step``."""
    return f"jobs/{job_id}/samples/{step_name(step)}.png"


def report_key(job_id: str, name: str) -> str:
    """A file an analysis job wrote (``probe.json``, ``probe.png``)."""
    return f"jobs/{job_id}/reports/{name}"


def report_prefix(job_id: str) -> str:
    """Every report file of a job."""
    return f"jobs/{job_id}/reports/"


def base_model_prefix(base_model_id: str) -> str:
    """Where an uploaded base model's files live: ``base_models/{id}/``."""
    return f"base_models/{base_model_id}/"
