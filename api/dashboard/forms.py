"""The dashboard's forms read into the REST API's own request schemas (``api.schemas``), so a form is
refused with the same messages, naming the same fields, as the JSON request would be."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from api.problems import STATUS, field_errors
from api.schemas import BaseModelCreate, ForgettingProbeCreate, JobCreate
from contract.train_config import TrainConfig
from core.errors import ServiceError

# The hyperparameters the new-job form shows, in order (the rest go in its JSON box).
JOB_FIELDS = ("max_steps", "resolution", "batch_size", "learning_rate", "bank_share", "bank_loss_weight",
              "target_power", "ema_decay", "label_dropout", "log_every", "checkpoint_every", "sample_every")
# Every field of a probe request but the dataset (the job's own) and metadata; guidance is a list of scales.
PROBE_FIELDS = tuple(name for name in ForgettingProbeCreate.model_fields if name not in ("dataset", "metadata"))
LOCATION_FIELDS = {"local": ("path",), "hub": ("repo_id", "revision"), "s3": ("uri",), "checkpoint": ("job_id", "step")}


@dataclass
class Outcome:
    """A form read into a request: the request, or the errors (``[{field, message}]``)."""

    request: Any = None
    errors: list[dict[str, str]] = field(default_factory=list)

    def by_field(self) -> dict[str, str]:
        """Each error's message by its field (the first one when a field has several)."""
        out: dict[str, str] = {}
        for error in self.errors:
            out.setdefault(error.get("field") or error.get("file") or "", error["message"])
        return out


def field_help(name: str) -> dict[str, Any]:
    """A TrainConfig field's default and description, shown next to its input."""
    info = TrainConfig.model_fields[name]
    return {"name": name, "default": info.default, "description": info.description or ""}


def probe_fields() -> list[dict[str, Any]]:
    """The probe form's fields: default (as typed: a list joined by commas), the choices of a fixed set."""
    out = []
    for name in PROBE_FIELDS:
        info = ForgettingProbeCreate.model_fields[name]
        default = info.get_default(call_default_factory=True)
        choices = list(get_args(info.annotation)) if get_origin(info.annotation) is Literal else None
        out.append({"name": name, "description": info.description or "", "choices": choices,
                    "default": ", ".join(map(str, default)) if isinstance(default, list) else default})
    return out


def service_errors(err: ServiceError) -> list[dict[str, str]]:
    """A service error's field errors, or its detail alone."""
    return err.errors or [{"field": "", "message": err.detail}]


def status_of(err: ServiceError) -> int:
    """The HTTP status the REST API answers ``err`` with."""
    return next((code for kind, code in STATUS.items() if isinstance(err, kind)), 400)


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _scalar(text: str) -> Any:
    """A number when the text is one (as JSON would carry it), else the text (refused by the schema)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _numbers(text: str, field_name: str, kind: type, errors: list[dict[str, str]]) -> list | None:
    if not text:
        return None
    try:
        return [kind(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        errors.append({"field": field_name, "message": f"must be {kind.__name__}s separated by commas"})
        return None


def _validated(schema: type[BaseModel], data: dict[str, Any], errors: list[dict[str, str]]) -> Outcome:
    if errors:
        return Outcome(errors=errors)
    try:
        return Outcome(request=schema.model_validate(data))
    except ValidationError as err:
        return Outcome(errors=field_errors([{**e, "loc": ("body", *e["loc"])} for e in err.errors()]))


def job_request(form: FormData) -> Outcome:
    """The new-job form as a ``JobCreate``."""
    errors: list[dict[str, str]] = []
    hyperparameters: dict[str, Any] = {}
    if more := _text(form, "more"):
        try:
            hyperparameters = json.loads(more)
        except json.JSONDecodeError as err:
            errors.append({"field": "hyperparameters", "message": f"not valid JSON ({err.msg}, line {err.lineno})"})
        if not isinstance(hyperparameters, dict):
            errors.append({"field": "hyperparameters", "message": "must be a JSON object"})
            hyperparameters = {}
    for name in JOB_FIELDS:
        if text := _text(form, name):
            if name in hyperparameters:
                errors.append({"field": f"hyperparameters.{name}", "message": "set both in the form and in the JSON"})
            hyperparameters[name] = _scalar(text)
    data: dict[str, Any] = {"base_model": _text(form, "base_model"), "dataset": _text(form, "dataset"),
                            "method": _text(form, "method") or None, "hyperparameters": hyperparameters}
    if labels := _numbers(_text(form, "validation_labels"), "validation_labels", int, errors):
        data["validation_labels"] = labels
    if seed := _text(form, "seed"):
        data["seed"] = _scalar(seed)
    if name := _text(form, "name"):
        data["metadata"] = {"name": name}
    return _validated(JobCreate, data, errors)


def probe_request(form: FormData) -> Outcome:
    """The forgetting-probe form as a ``ForgettingProbeCreate``."""
    errors: list[dict[str, str]] = []
    data: dict[str, Any] = {}
    for name in PROBE_FIELDS:
        if not (text := _text(form, name)):
            continue
        data[name] = _numbers(text, name, float, errors) if name == "guidance" else _scalar(text)
    return _validated(ForgettingProbeCreate, data, errors)


def model_request(form: FormData) -> Outcome:
    """The base-model form as a ``BaseModelCreate``."""
    kind = _text(form, "kind")
    location: dict[str, Any] = {"kind": kind}
    for name in LOCATION_FIELDS.get(kind, ()):
        if text := _text(form, name):
            location[name] = _scalar(text) if name == "step" else text
    return _validated(BaseModelCreate, {"name": _text(form, "name"), "family": _text(form, "family"),
                                        "location": location}, [])


def values(form: FormData | None) -> dict[str, str]:
    """What was typed, to show again with the errors."""
    return {k: v for k, v in (form or {}).items() if isinstance(v, str) and k != "csrf_token"}
