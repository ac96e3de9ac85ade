"""SDXL, SD3 and Flux over REST: register the folder, the load check learns the sizes it trains at,
a Diff-Tuning LoRA job in aspect-ratio buckets runs through the worker, and diffusers loads what the
service stored."""

from __future__ import annotations

import diffusers
import pytest
import torch

from contract.families import family_of_api_name

from .conftest import TINY_HYPERPARAMETERS

# api name -> (multiple, largest) of the tiny models' resolutions
TINY_RESOLUTIONS = {"sdxl": (4, None), "sd3": (4, 64), "flux": (4, None)}


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    import models.tiny

    built = {}

    def get(name: str):
        if name not in built:
            build = getattr(models.tiny, f"build_tiny_{name}_pipeline")
            built[name] = build(tmp_path_factory.mktemp("worker_modern") / name, resolution=16)
        return built[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("api_name", sorted(TINY_RESOLUTIONS))
def test_a_modern_family_tunes_over_rest_and_loads_in_diffusers(worker_ctx, client, auth, archives, storage,
                                                                 tiny_folders, tmp_path, one_thread, api_name):
    from worker.checks import check_base_model
    from worker.pipeline import run

    model = client.post("/v1/base-models", headers=auth, json={
        "name": api_name, "family": api_name, "location": {"kind": "local", "path": str(tiny_folders(api_name))}})
    assert model.status_code == 201, model.text
    assert check_base_model(model.json()["id"]) == "ready"
    checked = client.get(f"/v1/base-models/{model.json()['id']}", headers=auth).json()
    multiple, largest = TINY_RESOLUTIONS[api_name]
    assert checked["resolutions"] == {"native": checked["image_size"], "multiple": multiple, "largest": largest}
    files = archives.captioned(n=3)  # landscape, portrait and square: three aspect-ratio buckets
    for i, size in enumerate([(40, 24), (24, 40), (20, 20)]):
        files[f"images/{i}.png"] = archives.png((60 * i, 80, 120), size=size)
    data = client.post("/v1/datasets", headers=auth, files={"file": ("d.zip", archives.zip(files))})
    assert data.status_code == 201, data.text
    buckets = client.get(f"/v1/datasets/{data.json()['id']}/buckets", headers=auth,
                         params={"resolution": 16, "bucket_step": 4}).json()
    assert buckets["histogram"] == {"12x20": 1, "16x16": 1, "20x12": 1}
    hyper = {**TINY_HYPERPARAMETERS, "max_steps": 2, "checkpoint_every": 2, "sample_every": 2, "peft": "lora",
             "lora_rank": 2, "max_sequence_length": 16, "lora_format": "kohya", "aspect_buckets": True,
             "bucket_step": 4}
    body = {"base_model": model.json()["id"], "dataset": data.json()["id"], "method": "difftune",
            "hyperparameters": hyper}
    refused = client.post("/v1/jobs", headers=auth, json={**body, "hyperparameters": {**hyper, "resolution": 18, "upscale_small_images": True}})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "hyperparameters.resolution"
    assert f"multiples of {multiple}px" in refused.json()["errors"][0]["message"]
    job = client.post("/v1/jobs", headers=auth, json=body).json()
    status = run(job["id"])
    done = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert status == "succeeded", done["error"]
    assert done["metrics"]["loss_bank"] is not None
    listed = client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()["data"][0]["files"]
    assert {"lora/pytorch_lora_weights.safetensors", "lora/pytorch_lora_weights_kohya.safetensors"} <= {
        f["path"] for f in listed}  # both LoRA formats are downloads
    local = tmp_path / "ck"
    storage.download_prefix(f"jobs/{job['id']}/checkpoints/step_0000002/", local)
    pipe = getattr(diffusers, family_of_api_name(api_name).pipeline).from_pretrained(local)
    pipe.load_lora_weights(local / "lora")
    options = {"max_sequence_length": 16} if api_name in ("sd3", "flux") else {}
    image = pipe("a red cat", num_inference_steps=2, height=16, width=16, output_type="np",
                 generator=torch.Generator().manual_seed(0), **options).images
    assert image.shape == (1, 16, 16, 3)
