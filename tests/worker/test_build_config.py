"""build_config: the base model's family and the job's validation prompts reach the TrainConfig."""

from __future__ import annotations

import pytest

from core.hyperparameters import validate_hyperparameters
from core.tables import Job
from worker.pipeline import build_config

SD_HYPERPARAMETERS = {"peft": "lora", "lora_rank": 8, "lora_alpha": 16, "lora_merge": True, "bank_label": "prompt",
                      "bank_prompts": ["a photo"], "control_extractor": "canny", "eval_every": 50,
                      "convergence_threshold": 0.4, "max_steps": 10}


@pytest.mark.parametrize(("family", "expected"), [("dit", "dit"), ("sd", "sd"), ("sd-controlnet", "controlnet")])
def test_family_comes_from_the_base_model(family, expected):
    hyper = validate_hyperparameters({"max_steps": 10})  # the API fills defaults, family "dit" included
    job = Job(hyperparameters=hyper, method="difftune", seed=0, validation_prompts=None)
    assert build_config(job, "/models/base", family).family == expected


def test_sd_hyperparameters_and_validation_prompts_pass_through():
    hyper = validate_hyperparameters(SD_HYPERPARAMETERS)
    job = Job(hyperparameters=hyper, method="difftune", seed=3, validation_prompts=["a red cat", "a dog"])
    config = build_config(job, "/models/sd", "sd-controlnet")
    assert config.validation_prompts == ["a red cat", "a dog"] and config.peft == "lora"
    assert (config.lora_rank, config.lora_alpha, config.bank_label, config.eval_every) == (8, 16, "prompt", 50)
