"""build_config: the worker runs the stored TrainConfig, pointed at the fetched base model."""

from __future__ import annotations

from contract.families import family_of_api_name
from core.hyperparameters import job_hyperparameters
from core.tables import Dataset, Job
from worker.pipeline import TrainSpec, build_config

SD_HYPERPARAMETERS = {"peft": "lora", "lora_rank": 8, "lora_alpha": 16, "lora_merge": True, "bank_label": "prompt",
                      "bank_prompts": ["a photo"], "control_extractor": "canny", "eval_every": 50,
                      "convergence_threshold": 0.4, "max_steps": 10, "resolution": 16}
CAPTIONED = Dataset(layout="metadata", num_classes=None, stats={"min_width": 16, "min_height": 16,
                                                                "conditioning": True})


def stored_job(**top_level) -> Job:
    hyper = job_hyperparameters(SD_HYPERPARAMETERS, family=family_of_api_name("sd-controlnet"), base_model_id="bm_1",
                                dataset=CAPTIONED, **top_level)
    return Job(hyperparameters=hyper, method=hyper["method"], seed=hyper["seed"],
               validation_prompts=hyper["validation_prompts"])


def test_family_prompts_and_hyperparameters_pass_through():
    config = build_config(stored_job(seed=3, validation_prompts=["a red cat", "a dog"]), "/models/sd")
    assert (config.family, config.base_model, config.seed) == ("controlnet", "/models/sd", 3)
    assert config.validation_prompts == ["a red cat", "a dog"] and config.peft == "lora"
    assert (config.lora_rank, config.lora_alpha, config.bank_label, config.eval_every) == (8, 16, "prompt", 50)


def test_a_torchrun_spec_round_trips_once():
    spec = TrainSpec(config=build_config(stored_job(), "/models/sd"), data_dir="/d", out_dir="/o", attempt=2, device="cpu")
    assert TrainSpec.from_json(spec.to_json()) == spec
