"""Registering a base model enqueues a load check; the worker marks it ready or failed."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from core.storage.keys import base_model_prefix, checkpoint_prefix
from core.tables import RegisteredModel


def test_registration_enqueues_a_check(client, auth, redis_client, tiny_base_dir):
    body = {"name": "tiny", "family": "dit", "location": {"kind": "local", "path": str(tiny_base_dir)}}
    model = client.post("/v1/base-models", headers=auth, json=body).json()
    assert model["status"] == "pending"
    def tasks(queue: str) -> list[tuple[str, str]]:
        messages = [json.loads(m) for m in redis_client.lrange(queue, 0, -1)]
        return [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages]

    assert ("worker.tasks.check_base_model", repr([model["id"]])) in tasks("checks")
    assert tasks("gpu") == []  # checks never wait behind training


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


def _zip_folder(folder: Path, top: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, top + path.relative_to(folder).as_posix())
    return buffer.getvalue()


def test_a_base_model_uploads_as_an_archive(client, auth, storage, tiny_base_dir, check_base_model):
    response = client.post("/v1/base-models/upload", headers=auth, data={"name": "tiny", "family": "dit"},
                           files={"file": ("tiny.zip", _zip_folder(tiny_base_dir, top="tiny-dit/"))})
    assert response.status_code == 201, response.text
    model = response.json()
    stored = storage.list(base_model_prefix(model["id"]))
    assert model["status"] == "pending" and model["location"] == {"kind": "upload", "files": len(stored)}
    assert base_model_prefix(model["id"]) + "model_index.json" in stored  # the wrapping folder is dropped
    assert check_base_model(model["id"]) == "ready"  # a worker fetches it from the service's store


def test_a_checkpoint_reference_loads_from_the_jobs_published_files(client, auth, db, storage, tiny_base_dir,
                                                                    check_base_model, make_job):
    """A base model named by ``{"kind": "checkpoint"}`` is fetched from the job's published checkpoint."""
    from core.services import jobs, outputs

    job = make_job()
    for path in tiny_base_dir.rglob("*"):
        if path.is_file():
            storage.put_file(checkpoint_prefix(job["id"], 3) + path.relative_to(tiny_base_dir).as_posix(), path)
    jobs.claim(db, job_id=job["id"], worker="w")
    outputs.create_checkpoint(db, job_id=job["id"], step=3)
    db.commit()
    model = client.post("/v1/base-models", headers=auth, json={
        "name": "chained", "family": "dit", "location": {"kind": "checkpoint", "job_id": job["id"]}}).json()
    assert model["location"] == {"kind": "checkpoint", "job_id": job["id"], "step": 3}
    assert check_base_model(model["id"]) == "ready"
