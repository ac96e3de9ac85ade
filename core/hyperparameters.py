"""Validate job hyperparameters with the library's own ``TrainConfig`` (contract package, no torch).

Whatever passes here is what the worker runs: the same model, the same cross-field rules.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from contract.buckets import bucket_report, expand_sizes
from contract.families import FamilySpec, Resolutions
from contract.train_config import TrainConfig, dump_config, field_errors
from core.datasets.inspection import METADATA
from core.errors import InvalidError
from core.tables import Dataset

FIELD = "hyperparameters"


def validate_hyperparameters(data: Any) -> dict[str, Any]:
    """The validated hyperparameters with every default filled in; ``InvalidError`` names each bad field."""
    return dump_config(_train_config(data))


def _train_config(data: Any) -> TrainConfig:
    if not isinstance(data, dict):
        raise InvalidError.field(FIELD, "must be an object")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        fields = [{"field": f"{FIELD}.{field}", "message": _plain(message)} for field, message in field_errors(err)]
        raise InvalidError("; ".join(f"{f['field']}: {f['message']}" for f in fields), errors=fields) from None


def _plain(message: str) -> str:
    return "unknown field" if message == "Extra inputs are not permitted" else message


# ----------------------------------------------------------------------------------------------
# A job's hyperparameters: the request's fields, the base model's family, the dataset's facts
# ----------------------------------------------------------------------------------------------

SET_BY_SERVICE = ("family", "base_model")


def job_hyperparameters(
    hyperparameters: dict[str, Any],
    *,
    family: FamilySpec,
    base_model_id: str,
    dataset: Dataset,
    resolutions: Resolutions | None = None,
    gpus: int = 1,
    **top_level: Any,
) -> dict[str, Any]:
    """The complete TrainConfig (as JSON) a job will run, or ``InvalidError`` naming the field.

    ``family`` and ``base_model`` come from the registered base model, never from the request;
    top-level request fields (``method``, ``seed``, ``validation_labels``, ``validation_prompts``)
    are copied in; then every rule the worker would apply is checked against the dataset, the base
    model's image size (known once a worker loaded it) and the GPUs.
    """
    if not isinstance(hyperparameters, dict):
        raise InvalidError.field(FIELD, "must be an object")
    for name in SET_BY_SERVICE:
        if name in hyperparameters:
            raise InvalidError.field(f"{FIELD}.{name}", "set from the registered base model; leave it out")
    merged = {**hyperparameters, "family": family.name, "base_model": base_model_id}
    for name, value in top_level.items():
        if value is None:
            continue
        if name in merged and merged[name] != value:
            raise InvalidError.field(f"{FIELD}.{name}", f"conflicts with the top-level {name!r}")
        merged[name] = value
    config = _train_config(merged)
    labels_field = "validation_labels" if top_level.get("validation_labels") is not None else f"{FIELD}.validation_labels"
    _check_against_dataset(config, family, dataset, labels_field=labels_field)
    problem = resolutions and resolutions.problem(config.resolution)
    if problem:
        raise InvalidError.field(f"{FIELD}.resolution", problem)
    _check_gpus(config, gpus)
    return dump_config(config)


def _check_against_dataset(config: TrainConfig, family: FamilySpec, dataset: Dataset, *, labels_field: str) -> None:
    if dataset.layout != family.dataset_layout:
        raise InvalidError.field(
            "dataset", f"a {family.api_name} model needs a {family.dataset_layout} dataset, not {dataset.layout}")
    if family.needs_controls and config.control_extractor == "none" and not dataset.stats.get("conditioning"):
        raise InvalidError.field(
            "dataset", f"control_extractor 'none' needs conditioning_file_name in the dataset's {METADATA}")
    classes = dataset.num_classes
    if classes is not None and config.num_classes is not None and config.num_classes != classes:
        raise InvalidError.field(f"{FIELD}.num_classes", f"{config.num_classes} but the dataset has {classes} classes")
    labels = config.validation_labels or []
    if classes is not None and (bad := [label for label in labels if not 0 <= label < classes]):
        raise InvalidError.field(labels_field, f"{bad} outside 0..{classes - 1}")
    if config.aspect_buckets:
        _check_buckets(config, dataset)
        return
    smallest = min(dataset.stats.get("min_width", 0), dataset.stats.get("min_height", 0))
    if smallest and smallest < config.resolution and not config.upscale_small_images:
        raise InvalidError.field(
            f"{FIELD}.resolution", f"{config.resolution} is larger than the dataset's smallest image side "
            f"({smallest}px); lower it or set upscale_small_images: true")


def _check_buckets(config: TrainConfig, dataset: Dataset) -> None:
    """Every image must cover its aspect-ratio bucket (unless upscaled), as the trainer will check."""
    recorded = dataset.stats.get("image_sizes")
    if recorded is None or config.upscale_small_images:
        return  # a dataset uploaded before sizes were recorded is checked by the trainer
    report = bucket_report(expand_sizes(recorded), resolution=config.resolution, bucket_step=config.bucket_step,
                           bucket_max_aspect=config.bucket_max_aspect)
    if report["smaller_than_bucket"]:
        raise InvalidError.field(
            f"{FIELD}.aspect_buckets", f"{report['smaller_than_bucket']} of the dataset's images are smaller than "
            f"their bucket at resolution {config.resolution}; lower the resolution or set upscale_small_images: true")


def _check_gpus(config: TrainConfig, gpus: int) -> None:
    if config.batch_size % gpus:
        raise InvalidError.field(f"{FIELD}.batch_size", f"{config.batch_size} is not divisible by {gpus} GPUs")
    per_gpu = config.batch_size // gpus
    if config.uses_bank and per_gpu < 2:
        raise InvalidError.field(
            f"{FIELD}.batch_size", f"{per_gpu} row(s) per GPU; Diff-Tuning with a bank needs at least 2 per GPU")
