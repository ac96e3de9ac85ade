"""Registering a base model enqueues a load check; the worker marks it ready or failed."""

from __future__ import annotations

import json

import pytest

from core.tables import RegisteredModel


def test_registration_enqueues_a_check(client, auth, redis_client, tiny_base_dir):
    body = {"name": "tiny", "family": "dit", "location": {"kind": "local", "path": str(tiny_base_dir)}}
    model = client.post("/v1/base-models", headers=auth, json=body).json()
    assert model["status"] == "pending"
    messages = [json.loads(m) for m in redis_client.lrange("gpu", 0, -1)]
    tasks = [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages]
    assert ("worker.tasks.check_base_model", repr([model["id"]])) in tasks


@pytest.fixture
def check_base_model(worker_ctx):
    """The worker's check task, on the test's database and storage."""
    from worker.checks import check_base_model

    return check_base_model


def test_check_marks_ready_or_failed_with_the_reason(client, auth, db, tiny_base_dir, tmp_path, check_base_model):
    good = client.post("/v1/base-models", headers=auth, json={
        "name": "ok", "family": "dit", "location": {"kind": "local", "path": str(tiny_base_dir)}}).json()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "model_index.json").write_text("{}")
    bad = client.post("/v1/base-models", headers=auth, json={
        "name": "bad", "family": "dit", "location": {"kind": "local", "path": str(tmp_path / "empty")}}).json()
    assert check_base_model(good["id"]) == "ready"
    assert check_base_model(bad["id"]) == "failed"
    checked = client.get(f"/v1/base-models/{good['id']}", headers=auth).json()
    assert checked["status"] == "ready" and checked["image_size"] == 16  # the tiny DiT generates 16 px
    failed = db.get(RegisteredModel, bad["id"], populate_existing=True)
    assert failed.status == "failed" and "not a diffusers DiT folder" in failed.error


def test_a_checked_base_model_refuses_a_resolution_it_cannot_train_at(
        client, auth, tiny_base_dir, archives, check_base_model):
    """The worker would reject it after the downloads; once the size is known, POST does."""
    model = client.post("/v1/base-models", headers=auth, json={
        "name": "ok", "family": "dit", "location": {"kind": "local", "path": str(tiny_base_dir)}}).json()
    dataset = client.post("/v1/datasets", headers=auth,
                          files={"file": ("d.zip", archives.zip(archives.class_folders()))}).json()
    body = {"base_model": model["id"], "dataset": dataset["id"],
            "hyperparameters": {"max_steps": 2, "resolution": 32, "upscale_small_images": True}}
    assert client.post("/v1/jobs", headers=auth, json=body).status_code == 201  # size not known yet
    assert check_base_model(model["id"]) == "ready"
    refused = client.post("/v1/jobs", headers=auth, json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"] == [{"field": "hyperparameters.resolution",
                                         "message": "the base model generates 16px images, not 32px"}]


@pytest.fixture
def offline_hub(monkeypatch, worker_ctx):
    """The worker's hub cache holding org/tiny at tag v1 (a snapshot with refs, as the hub client
    writes it), and the hub client offline: nothing leaves this machine."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    repo = worker_ctx.cache_dir / "hub" / "models--org--tiny"
    (repo / "snapshots" / "c0ffee").mkdir(parents=True)
    (repo / "snapshots" / "c0ffee" / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "v1").write_text("c0ffee")
    return repo


@pytest.mark.parametrize(("revision", "found"), [("v1", True), ("v2", False)])
def test_hub_locations_are_fetched_at_their_revision(offline_hub, worker_ctx, revision, found):
    from core.tables import RegisteredModel
    from worker.fetch import InputError, fetch_base_model

    model = RegisteredModel(location={"kind": "hub", "repo_id": "org/tiny", "revision": revision})
    if found:
        assert fetch_base_model(worker_ctx, model) == str(offline_hub / "snapshots" / "c0ffee")
    else:
        with pytest.raises(InputError, match="base_model: org/tiny@v2 is not in the worker's hub cache"):
            fetch_base_model(worker_ctx, model)
