"""Jobs for Stable Diffusion and ControlNet base models: their hyperparameters and prompts pass the API."""

from __future__ import annotations

import pytest

SD_HYPERPARAMETERS = {"max_steps": 20, "resolution": 16, "peft": "lora", "lora_rank": 8, "lora_merge": True, "bank_label": "prompt",
                      "bank_prompts": ["a photo of a house"], "control_extractor": "canny", "eval_every": 5,
                      "convergence_threshold": 0.3}


@pytest.fixture
def controlnet_setup(client, auth, upload, archives) -> tuple[str, str]:
    body = {"name": "tiny-sd-cn", "family": "sd-controlnet", "location": {"kind": "s3", "uri": "s3://models/cn"}}
    model = client.post("/v1/base-models", headers=auth, json=body)
    assert model.status_code == 201, model.text
    data = upload(archives.zip(archives.captioned(conditioning=True)))
    assert data.status_code == 201, data.text
    return model.json()["id"], data.json()["id"]


def test_controlnet_job_keeps_its_hyperparameters_and_prompts(client, auth, controlnet_setup):
    model, dataset = controlnet_setup
    body = {"base_model": model, "dataset": dataset, "hyperparameters": SD_HYPERPARAMETERS,
            "validation_prompts": ["a red house", "a tree"]}
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["hyperparameters"]["lora_rank"] == 8 and job["hyperparameters"]["control_extractor"] == "canny"
    assert job["validation_prompts"] == ["a red house", "a tree"]


@pytest.mark.parametrize(("change", "field"), [({"lora_rank": 0}, "hyperparameters.lora_rank"),
                                               ({"control_extractor": "sobel"}, "hyperparameters.control_extractor")])
def test_bad_sd_hyperparameters_name_the_field(client, auth, controlnet_setup, change, field):
    model, dataset = controlnet_setup
    body = {"base_model": model, "dataset": dataset, "hyperparameters": {**SD_HYPERPARAMETERS, **change}}
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 422 and field in response.text, response.text
