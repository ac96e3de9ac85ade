"""JSON schemas committed from the training library, so core validates without importing it."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

TRAIN_CONFIG_SCHEMA = "train_config.schema.json"


@cache
def train_config_schema() -> dict[str, Any]:
    """The JSON schema of ``models.config.TrainConfig`` (kept equal by tests/core)."""
    return json.loads(resources.files(__package__).joinpath(TRAIN_CONFIG_SCHEMA).read_text())
