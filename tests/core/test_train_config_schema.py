"""The committed schema equals ``TrainConfig.model_json_schema()`` (regenerate it when this fails)."""

from __future__ import annotations

import json
from pathlib import Path

from core.schemas import TRAIN_CONFIG_SCHEMA, train_config_schema
from models.config import TrainConfig

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "core" / "schemas" / TRAIN_CONFIG_SCHEMA


def render() -> str:
    """The schema file's expected text."""
    return json.dumps(TrainConfig.model_json_schema(), indent=2, sort_keys=True) + "\n"


def test_committed_schema_is_current():
    expected = render()
    assert SCHEMA_FILE.read_text() == expected, (
        "core/schemas/train_config.schema.json is stale; regenerate it with\n"
        ".venv/bin/python -c 'import json; from models.config import TrainConfig; "
        "print(json.dumps(TrainConfig.model_json_schema(), indent=2, sort_keys=True))' "
        "> core/schemas/train_config.schema.json"
    )
    assert train_config_schema() == json.loads(expected)
