"""Where a base model may come from: operator roots and prefixes only, never the service's own area,
a tenant's own checkpoints by reference, uploaded archives; quotas on pending checks and queued jobs."""

from __future__ import annotations

import io
import zipfile

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.services import jobs, outputs
from core.storage.keys import checkpoint_prefix


@pytest.fixture
def strict(settings, db, redis_client, tmp_path):
    """An API whose only model root is ``tmp_path/models`` and only S3 prefix ``s3://shared/models``;
    its own storage is the test's S3 prefix and its cache lives under the root (as a careless operator
    might configure it)."""
    root = tmp_path / "models"
    strict = settings.model_copy(update={"model_roots": [root], "model_s3_prefixes": ["s3://shared/models"],
                                         "cache_dir": root / "cache"})
    with TestClient(create_app(strict)) as client:
        yield client, root, strict


def _register(client, auth, location, family="dit"):
    return client.post("/v1/base-models", headers=auth, json={"name": "m", "family": family, "location": location})


def test_local_locations_only_under_the_roots_and_existence_is_not_revealed(strict, auth):
    client, root, _ = strict
    (root / "present").mkdir(parents=True)
    assert _register(client, auth, {"kind": "local", "path": str(root / "present")}).status_code == 201
    answers = {}
    for path in ("/etc", "/does/not/exist", f"{root}/../escape", str(root / "cache" / "jobs")):
        response = _register(client, auth, {"kind": "local", "path": path})
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "location.path", path
        answers[path] = response.json()["detail"]
    assert answers["/etc"] == answers["/does/not/exist"]  # an existing and a missing path: the same answer
    assert str(root) in answers["/etc"] and "DIFFTUNE_MODEL_ROOTS" in answers["/etc"]


def test_s3_locations_only_under_the_prefixes_never_the_services_own(strict, auth):
    client, _, settings = strict
    assert _register(client, auth, {"kind": "s3", "uri": "s3://shared/models/dit"}).status_code == 201
    own = f"s3://{settings.storage.bucket}/{settings.storage.prefix}/jobs/job_x/checkpoints/step_0000010"
    for uri in ("s3://shared/modelsX/dit", "s3://shared/models/../secrets", "s3://other/models/dit", own):
        response = _register(client, auth, {"kind": "s3", "uri": uri})
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "location.uri", uri
    wide = settings.model_copy(update={"model_s3_prefixes": [f"s3://{settings.storage.bucket}"]})
    with TestClient(create_app(wide)) as client:  # even when the operator allows the whole bucket
        assert _register(client, auth, {"kind": "s3", "uri": own}).status_code == 422


@pytest.fixture
def finished_job(client, auth, db, register, dataset):
    """A DiT job of tenant acme with checkpoints published at steps 5 and 10."""
    model = register("dit", {"kind": "hub", "repo_id": "acme/dit"})
    job = client.post("/v1/jobs", headers=auth, json={"base_model": model["id"], "dataset": dataset["id"],
                                                      "hyperparameters": {"resolution": 16}}).json()
    jobs.claim(db, job_id=job["id"], worker="w")
    for step in (5, 10):
        outputs.create_checkpoint(db, job_id=job["id"], step=step)
    db.commit()
    jobs.mark_succeeded(db, job_id=job["id"], attempt=1, step=10)
    return job


def test_a_tenant_chains_its_own_checkpoint_by_reference(client, auth, finished_job):
    latest = _register(client, auth, {"kind": "checkpoint", "job_id": finished_job["id"]})
    assert latest.status_code == 201, latest.text
    assert latest.json()["location"] == {"kind": "checkpoint", "job_id": finished_job["id"], "step": 10}
    pinned = _register(client, auth, {"kind": "checkpoint", "job_id": finished_job["id"], "step": 5})
    assert pinned.json()["location"]["step"] == 5
    missing = _register(client, auth, {"kind": "checkpoint", "job_id": finished_job["id"], "step": 7})
    assert missing.status_code == 422 and "it has 5, 10" in missing.json()["detail"]
    wrong_family = _register(client, auth, {"kind": "checkpoint", "job_id": finished_job["id"]}, family="sd")
    assert wrong_family.status_code == 422 and wrong_family.json()["errors"][0]["field"] == "family"


def test_another_tenants_checkpoint_cannot_be_registered(client, other_auth, finished_job, settings):
    """The attack of the issue: tenant B names tenant A's checkpoint in every way it can."""
    by_reference = _register(client, other_auth, {"kind": "checkpoint", "job_id": finished_job["id"]})
    assert by_reference.status_code == 422 and by_reference.json()["errors"][0]["field"] == "location.job_id"
    in_store = f"s3://{settings.storage.bucket}/{settings.storage.prefix}/{checkpoint_prefix(finished_job['id'], 10)}"
    assert _register(client, other_auth, {"kind": "s3", "uri": in_store}).status_code == 422
    in_cache = str(settings.cache_dir / "jobs" / finished_job["id"] / "run")
    assert _register(client, other_auth, {"kind": "local", "path": in_cache}).status_code == 422


def test_a_bad_model_archive_leaves_nothing_behind(client, auth, storage, db):
    from core.tables import RegisteredModel

    files = {"file": ("m.zip", _zip_folder_bytes({"unet/config.json": b"{}"}))}
    response = client.post("/v1/base-models/upload", headers=auth, data={"name": "m", "family": "sd"}, files=files)
    assert response.status_code == 422 and "model_index.json" in response.json()["detail"]
    assert storage.list("base_models/") == [] and db.query(RegisteredModel).count() == 0
    not_a_pipeline = {"file": ("m.zip", _zip_folder_bytes({"model_index.json": b'{"_class_name": "Nope"}'}))}
    response = client.post("/v1/base-models/upload", headers=auth, data={"name": "m", "family": "sd"},
                           files=not_a_pipeline)
    assert response.status_code == 422 and response.json()["errors"][0]["file"] == "model_index.json"
    assert storage.list("base_models/") == []


def _zip_folder_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_pending_checks_and_queued_jobs_are_capped_per_tenant(settings, db, redis_client, auth, other_auth,
                                                               dataset):
    capped = settings.model_copy(update={"tenant_max_pending_checks": 2, "tenant_max_queued_jobs": 1})
    with TestClient(create_app(capped)) as client:
        hub = {"kind": "hub", "repo_id": "acme/dit"}
        codes = [_register(client, auth, hub).status_code for _ in range(3)]
        assert codes == [201, 201, 429]
        refused = _register(client, auth, hub)
        assert refused.headers["content-type"] == "application/problem+json" and int(refused.headers["Retry-After"]) > 0
        assert "waiting for their load check" in refused.json()["detail"]
        assert _register(client, other_auth, hub).status_code == 201  # other tenants are unaffected
        model = client.get("/v1/base-models", headers=auth).json()["data"][0]["id"]
        body = {"base_model": model, "dataset": dataset["id"], "hyperparameters": {"resolution": 16}}
        assert client.post("/v1/jobs", headers=auth, json=body).status_code == 201
        second = client.post("/v1/jobs", headers=auth, json=body)
        assert second.status_code == 429 and "queued jobs" in second.json()["detail"]
