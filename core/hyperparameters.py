"""Validate job hyperparameters with the library's own ``TrainConfig`` (contract package, no torch).

Whatever passes here is what the worker runs: the same model, the same cross-field rules.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from contract.train_config import TrainConfig, dump_config, field_errors
from core.errors import InvalidError

FIELD = "hyperparameters"


def validate_hyperparameters(data: Any) -> dict[str, Any]:
    """The validated hyperparameters with every default filled in; ``InvalidError`` names each bad field."""
    if not isinstance(data, dict):
        raise InvalidError.field(FIELD, "must be an object")
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as err:
        fields = [{"field": f"{FIELD}.{field}", "message": _plain(message)} for field, message in field_errors(err)]
        raise InvalidError("; ".join(f"{f['field']}: {f['message']}" for f in fields), errors=fields) from None
    return dump_config(config)


def _plain(message: str) -> str:
    return "unknown field" if message == "Extra inputs are not permitted" else message
