"""A ControlNet job through the worker pipeline: family from the base model, prompts, convergence metric."""

from __future__ import annotations

import pytest

from .conftest import TINY_HYPERPARAMETERS


@pytest.fixture(scope="session")
def tiny_controlnet_dir(tmp_path_factory):
    from models.tiny import build_tiny_sd_pipeline

    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("worker_cn") / "sd", resolution=16, controlnet=True)


@pytest.mark.slow
def test_controlnet_job_trains_and_reports_convergence(worker_ctx, client, auth, archives,
                                                       tiny_controlnet_dir, storage, one_thread):
    from worker.pipeline import run

    data = client.post("/v1/datasets", headers=auth,
                       files={"file": ("d.zip", archives.zip(archives.captioned(n=3, conditioning=True)))})
    assert data.status_code == 201, data.text
    body = {"name": "cn", "family": "sd-controlnet", "location": {"kind": "local", "path": str(tiny_controlnet_dir)}}
    model = client.post("/v1/base-models", headers=auth, json=body)
    assert model.status_code == 201, model.text
    hyper = {**TINY_HYPERPARAMETERS, "max_steps": 2, "checkpoint_every": 2, "sample_every": 2, "eval_every": 1,
             "peft": "lora", "lora_rank": 2}
    job = client.post("/v1/jobs", headers=auth, json={
        "base_model": model.json()["id"], "dataset": data.json()["id"], "hyperparameters": hyper,
        "validation_prompts": ["a red house"]}).json()
    status = run(job["id"])
    body = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert status == "succeeded", body["error"]
    evaluation = body["metrics"]["evaluation"]
    assert evaluation["metric"] == "canny_f1" and [s for s, _ in evaluation["history"]] == [1, 2]
    prefix = f"jobs/{job['id']}/checkpoints/step_0000002/"
    keys = storage.list(prefix)
    assert prefix + "controlnet/config.json" in keys and prefix + "lora/pytorch_lora_weights.safetensors" in keys
