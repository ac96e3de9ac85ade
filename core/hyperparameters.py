"""Validate job hyperparameters against the committed TrainConfig schema and fill its defaults."""

from __future__ import annotations

import copy
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from core.errors import InvalidError
from core.schemas import train_config_schema

FIELD = "hyperparameters"


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/$defs/"):
        return root["$defs"][ref.removeprefix("#/$defs/")]
    return schema


def fill_defaults(data: dict[str, Any], schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with every missing property set to its schema default (nested objects too)."""
    out = copy.deepcopy(data)
    for name, prop in _resolve(schema, root).get("properties", {}).items():
        sub = _resolve(prop, root)
        if name not in out and "default" in prop:
            out[name] = copy.deepcopy(prop["default"])
        elif name not in out and sub.get("type") == "object":
            out[name] = {}
        if isinstance(out.get(name), dict) and sub.get("type") == "object":
            out[name] = fill_defaults(out[name], sub, root)
    return out


def _field_errors(error: ValidationError) -> list[dict[str, str]]:
    path = ".".join([FIELD, *(str(p) for p in error.absolute_path)])
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        return [
            {"field": f"{path}.{k}", "message": "unknown field"} for k in error.instance if k not in known
        ]
    return [{"field": path, "message": error.message}]


def validate_hyperparameters(data: Any) -> dict[str, Any]:
    """Validated hyperparameters with defaults; ``InvalidError`` names each bad field."""
    if not isinstance(data, dict):
        raise InvalidError.field(FIELD, "must be an object")
    root = train_config_schema()
    errors = sorted(Draft202012Validator(root).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        fields = [f for e in errors for f in _field_errors(e)]
        raise InvalidError("; ".join(f"{f['field']}: {f['message']}" for f in fields), errors=fields)
    return fill_defaults(data, root, root)
