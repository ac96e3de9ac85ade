"""Hyperparameters are validated by the contract's TrainConfig itself, without torch."""

from __future__ import annotations

import pytest

from contract.train_config import TrainConfig
from core.errors import InvalidError
from core.hyperparameters import validate_hyperparameters


def test_defaults_match_the_library():
    assert validate_hyperparameters({}) == TrainConfig().model_dump(mode="json")


def test_a_job_sampled_unguided_gets_the_recipe_measured_best_there():
    stored = validate_hyperparameters({"validation_guidance_scale": 1})
    assert (stored["method"], stored["loss_weighting"]) == ("standard", "min_snr")
    assert validate_hyperparameters({})["method"] == "difftune"


def test_given_values_are_kept_and_nested_defaults_filled():
    config = validate_hyperparameters({"max_steps": 10, "bank": {"size": 8}})
    assert config["max_steps"] == 10 and config["bank"]["size"] == 8
    assert config["bank"]["sampler"] == "ddim"
    assert TrainConfig.model_validate(config).max_steps == 10


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"bank_share": 1.5}, "hyperparameters.bank_share"),
        ({"learning_rate": "fast"}, "hyperparameters.learning_rate"),
        ({"method": "magic"}, "hyperparameters.method"),
        ({"bank": {"size": 0}}, "hyperparameters.bank.size"),
        ({"no_such_knob": 1}, "hyperparameters.no_such_knob"),
    ],
)
def test_errors_name_the_field(data, field):
    with pytest.raises(InvalidError) as err:
        validate_hyperparameters(data)
    assert [e["field"] for e in err.value.errors] == [field]
    assert field in err.value.detail


def test_every_bad_field_is_reported():
    with pytest.raises(InvalidError) as err:
        validate_hyperparameters({"bank_share": -1, "max_steps": 0})
    assert {e["field"] for e in err.value.errors} == {
        "hyperparameters.bank_share",
        "hyperparameters.max_steps",
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"family": "dit", "bank_label": "prompt"}, "hyperparameters.bank_label"),
        ({"family": "sd", "bank_label": "source"}, "hyperparameters.bank_label"),
        ({"num_classes": 3, "validation_labels": [5]}, "hyperparameters.validation_labels"),
        ({"batch_size": 1}, "hyperparameters.batch_size"),
    ],
)
def test_cross_field_rules_name_their_field(data, field):
    """The library's cross-field rules hold at the API too (they once failed only in the worker)."""
    with pytest.raises(InvalidError) as err:
        validate_hyperparameters(data)
    assert [e["field"] for e in err.value.errors] == [field]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"max_steps": 10**12}, "hyperparameters.max_steps"),
        ({"seed": 2**70}, "hyperparameters.seed"),
        ({"seed": -1}, "hyperparameters.seed"),
        ({"batch_size": 10**6}, "hyperparameters.batch_size"),
        ({"resolution": 100_000}, "hyperparameters.resolution"),
        ({"keep_checkpoints": 10**6}, "hyperparameters.keep_checkpoints"),
        ({"bank": {"size": 10**9}}, "hyperparameters.bank.size"),
        ({"weight_decay": float("inf")}, "hyperparameters.weight_decay"),
        ({"validation_prompts": ["x" * 5000]}, "hyperparameters.validation_prompts.0"),
    ],
)
def test_every_size_has_an_upper_bound(data, field):
    """Huge values are refused naming the field, before they overflow a column, a shape or the disk."""
    with pytest.raises(InvalidError) as err:
        validate_hyperparameters(data)
    assert [e["field"] for e in err.value.errors] == [field]
