"""One contract: what POST /v1/jobs accepts, the worker runs; what it would reject is a 422 naming the field."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from contract.train_config import TrainConfig
from core.tables import Job
from worker.pipeline import build_config

TINY = {"max_steps": 5, "resolution": 16}


@pytest.fixture
def sd_model(register) -> dict:
    return register("sd", {"kind": "local", "path": "/models/sd"})


@pytest.fixture
def captioned(upload, archives) -> dict:
    response = upload(archives.zip(archives.captioned(n=3)))
    assert response.status_code == 201, response.text
    return response.json()


def post(client, auth, **body):
    return client.post("/v1/jobs", headers=auth, json=body)


@pytest.mark.parametrize(
    ("hyperparameters", "top_level", "field", "words"),
    [
        ({"bank_label": "prompt"}, {}, "hyperparameters.bank_label", "text-conditioned"),
        ({"family": "sd"}, {}, "hyperparameters.family", "registered base model"),
        ({"base_model": "/elsewhere"}, {}, "hyperparameters.base_model", "registered base model"),
        ({"resolution": 32}, {}, "hyperparameters.resolution", "smallest image side (16px)"),
        ({"num_classes": 5}, {}, "hyperparameters.num_classes", "the dataset has 2 classes"),
        ({"validation_labels": [3]}, {}, "hyperparameters.validation_labels", "outside 0..1"),
        ({}, {"validation_labels": [0, 2]}, "validation_labels", "outside 0..1"),
        ({"batch_size": 6}, {"resources": {"gpus": 4}}, "hyperparameters.batch_size", "not divisible by 4"),
        ({"batch_size": 4}, {"resources": {"gpus": 4}}, "hyperparameters.batch_size", "at least 2 per GPU"),
        ({"seed": 1}, {"seed": 2}, "hyperparameters.seed", "conflicts"),
    ],
)
def test_what_the_worker_would_reject_is_a_422_naming_the_field(
        client, auth, base_model, dataset, db, hyperparameters, top_level, field, words):
    response = post(client, auth, base_model=base_model["id"], dataset=dataset["id"],
                    hyperparameters={**TINY, **hyperparameters}, **top_level)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert [e["field"] for e in problem["errors"]] == [field] and words in problem["detail"]
    assert db.scalar(select(func.count()).select_from(Job)) == 0  # nothing half-written


def test_upscale_small_images_lifts_the_resolution_rule(client, auth, base_model, dataset):
    response = post(client, auth, base_model=base_model["id"], dataset=dataset["id"],
                    hyperparameters={"max_steps": 5, "resolution": 32, "upscale_small_images": True})
    assert response.status_code == 201, response.text


def test_stored_hyperparameters_name_the_trained_family_and_base_model(client, auth, sd_model, captioned):
    response = post(client, auth, base_model=sd_model["id"], dataset=captioned["id"], hyperparameters=TINY,
                    validation_prompts=["a red house"])
    assert response.status_code == 201, response.text
    job = client.get(f"/v1/jobs/{response.json()['id']}", headers=auth).json()
    hyper = job["hyperparameters"]
    assert hyper["family"] == "sd" and hyper["base_model"] == sd_model["id"]
    assert hyper["validation_prompts"] == ["a red house"] == job["validation_prompts"]


def test_the_worker_runs_exactly_what_was_stored(client, auth, sd_model, captioned, db):
    hyper = {**TINY, "bank_label": "prompt", "peft": "lora", "lora_rank": 2}
    created = post(client, auth, base_model=sd_model["id"], dataset=captioned["id"], hyperparameters=hyper,
                   seed=9).json()
    row = db.get(Job, created["id"])
    config = build_config(row, "/worker/cache/base_models/x")
    assert config.base_model == "/worker/cache/base_models/x"
    stored = TrainConfig.model_validate(created["hyperparameters"])
    assert config.model_dump(exclude={"base_model"}) == stored.model_dump(exclude={"base_model"})
    assert (config.family, config.seed, config.bank_label, config.lora_rank) == ("sd", 9, "prompt", 2)


def test_controlnet_without_conditioning_files_needs_an_extractor(client, auth, captioned, register):
    model = register("sd-controlnet", {"kind": "local", "path": "/models/cn"})
    blank = post(client, auth, base_model=model["id"], dataset=captioned["id"],
                 hyperparameters={**TINY, "control_extractor": "none"})
    assert blank.status_code == 422 and blank.json()["errors"][0]["field"] == "dataset", blank.text
    canny = post(client, auth, base_model=model["id"], dataset=captioned["id"], hyperparameters=TINY)
    assert canny.status_code == 201, canny.text  # controls are extracted from the images
    assert canny.json()["hyperparameters"]["family"] == "controlnet"


def test_a_dit_model_needs_class_folders(client, auth, base_model, captioned):
    response = post(client, auth, base_model=base_model["id"], dataset=captioned["id"], hyperparameters=TINY)
    assert response.status_code == 422 and "needs a class_folders dataset" in response.text


def test_hub_revision_is_validated(client, auth):
    body = {"name": "h", "family": "sd", "location": {"kind": "hub", "repo_id": "org/model", "revision": "a b"}}
    response = client.post("/v1/base-models", headers=auth, json=body)
    assert response.status_code == 422 and "location.hub.revision" in response.text, response.text
