"""A dataset's aspect-ratio buckets through the API: the histogram in its stats and at any settings, and
a bucketed job refused at submission when images are smaller than their buckets."""

from __future__ import annotations

import json

import pytest

SIZES = [(40, 24), (40, 24), (24, 40), (20, 20)]  # (width, height)


@pytest.fixture
def mixed(upload, archives) -> dict:
    files, lines = {}, []
    for i, size in enumerate(SIZES):
        files[f"{i}.png"] = archives.png((30 * i, 60, 90), size=size)
        lines.append(json.dumps({"file_name": f"{i}.png", "text": f"picture {i}"}))
    files["metadata.jsonl"] = "\n".join(lines).encode()
    response = upload(archives.zip(files))
    assert response.status_code == 201, response.text
    return response.json()


def test_stats_show_the_bucket_histogram_and_any_settings_can_be_asked(client, auth, other_auth, mixed):
    stats = mixed["stats"]
    assert "image_sizes" not in stats  # per-size counts stay out of every dataset listing
    default = stats["aspect_buckets"]
    assert (default["resolution"], default["bucket_step"], default["bucket_max_aspect"]) == (1024, 64, 2.0)
    assert sum(default["histogram"].values()) == 4 and default["smaller_than_bucket"] == 4  # tiny images
    url = f"/v1/datasets/{mixed['id']}/buckets"
    response = client.get(url, headers=auth, params={"resolution": 16, "bucket_step": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["histogram"] == {"12x20": 1, "16x16": 1, "20x12": 2}  # W×H, tallest first
    assert (body["dataset_id"], body["object"], body["smaller_than_bucket"]) == (mixed["id"], "dataset.buckets", 0)
    bad = client.get(url, headers=auth, params={"bucket_max_aspect": 0.5})
    assert bad.status_code == 422 and "bucket_max_aspect" in bad.text
    bad = client.get(url, headers=auth, params={"resolution": 16, "bucket_step": 32})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "bucket_step"
    square = client.get(url, headers=auth, params={"resolution": 100, "bucket_step": 64, "bucket_max_aspect": 1})
    assert square.json()["histogram"] == {"64x64": 4}  # at most 1:1, the one square bucket
    assert client.get(url, headers=other_auth).status_code == 404  # another tenant's dataset does not exist


def test_a_bucketed_job_with_images_smaller_than_their_buckets_is_refused(client, auth, register, mixed):
    model = register("sdxl", {"kind": "s3", "uri": "s3://models/tiny-sdxl"})
    body = {"base_model": model["id"], "dataset": mixed["id"],
            "hyperparameters": {"resolution": 32, "aspect_buckets": True, "bucket_step": 8, "max_steps": 2}}
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 422, response.text
    assert "hyperparameters.aspect_buckets" in response.text and "smaller than their bucket" in response.text
    body["hyperparameters"].update(resolution=16, bucket_step=4)
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 201, response.text
    assert response.json()["hyperparameters"]["aspect_buckets"] is True
