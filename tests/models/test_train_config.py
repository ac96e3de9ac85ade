"""TrainConfig: YAML loading, defaults, and errors that name the field."""

from __future__ import annotations

import pytest

from contract.train_config import ConfigError, TrainConfig, load_config, parse_config


def test_defaults_follow_the_reference():
    cfg = TrainConfig()
    assert (cfg.method, cfg.target_power, cfg.bank_share, cfg.bank_loss_weight) == ("difftune", 1.0, 0.2, 0.1)
    assert (cfg.learning_rate, cfg.weight_decay, cfg.ema_decay, cfg.batch_size, cfg.max_steps) == (
        1e-4, 0.0, 0.9999, 32, 24000)
    assert cfg.label_dropout == 0.1 and cfg.bank_label == "null"
    assert cfg.effective_bank_power == 1.0 and cfg.uses_bank
    assert not parse_config({"method": "standard"}).uses_bank


@pytest.mark.parametrize("given, recipe", [
    ({}, ("difftune", "none")),  # guided samples (default 4): Diff-Tuning's reference recipe
    ({"validation_guidance_scale": 2.5}, ("difftune", "none")),
    ({"validation_guidance_scale": 1}, ("standard", "min_snr")),  # unguided: measured best there
    ({"validation_guidance_scale": 1, "family": "sd3"}, ("standard", "none")),  # flow matching has no Min-SNR
    ({"validation_guidance_scale": 1, "loss_weighting": "p2"}, ("standard", "p2")),  # the user's weighting kept
    ({"validation_guidance_scale": 1, "method": "difftune"}, ("difftune", "none")),  # an explicit method wins
])
def test_the_default_recipe_follows_the_sampling_guidance(given, recipe):
    config = parse_config(given)
    assert (config.method, config.loss_weighting) == recipe
    assert parse_config(config.model_dump()) == config  # the stored choice reloads as itself


def test_yaml_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: standard\nbank:\n  size: 100\nbatch_size: 16\n")
    cfg = load_config(path, max_steps=7, base_model=None)
    assert (cfg.method, cfg.bank.size, cfg.batch_size, cfg.max_steps) == ("standard", 100, 16, 7)


@pytest.mark.parametrize(("values", "field"), [
    ({"bank_share": 1.0}, "bank_share"),
    ({"learning_rate": -1}, "learning_rate"),
    ({"method": "lora-magic"}, "method"),
    ({"bank": {"size": 0}}, "bank.size"),
    ({"target_power": "steep"}, "target_power"),
    ({"batchsize": 32}, "batchsize"),
    ({"num_classes": 3, "validation_labels": [0, 5]}, "validation_labels"),
])
def test_invalid_values_name_the_field(values, field):
    with pytest.raises(ConfigError) as err:
        parse_config(values)
    assert field in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
