"""The Python client against the real app (PostgreSQL, Redis, moto S3): every resource of the API."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from difftune_client import (
    ApiKeyCreated,
    BaseModelInfo,
    Client,
    ConfigurationError,
    Conflict,
    Dataset,
    Invalid,
    Job,
    NotFound,
    Unauthorized,
    WaitTimeout,
    WebhookEndpoint,
)
from tests.client.conftest import make_client, publish_checkpoint, run_to_success


def test_datasets_upload_an_archive_or_a_folder_with_progress(api, archives, image_folder, tmp_path):
    archive = tmp_path / "captioned.zip"
    archive.write_bytes(archives.zip(archives.captioned(n=3)))
    seen: list[tuple[int, int]] = []
    captioned = api.datasets.upload(archive, progress=lambda sent, total: seen.append((sent, total)))
    size = archive.stat().st_size
    assert isinstance(captioned, Dataset) and captioned.name == "captioned.zip" and captioned.num_images == 3
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)

    folder = api.datasets.upload(image_folder, name="shapes")  # zipped on the fly; .DS_Store left out
    assert folder.name == "shapes" and folder.layout == "class_folders" and folder.classes == ["class_0", "class_1"]
    assert folder.num_images == 6 and api.datasets.get(folder.id) == folder
    buckets = api.datasets.buckets(folder.id, resolution=16, bucket_step=8)
    assert buckets.dataset_id == folder.id and buckets.histogram == {"16x16": 6}
    assert [d.id for d in api.datasets.list(limit=1)] == [folder.id, captioned.id]
    api.datasets.delete(captioned.id)
    with pytest.raises(NotFound):
        api.datasets.get(captioned.id)
    with pytest.raises(FileNotFoundError):
        api.datasets.upload(tmp_path / "missing")


def test_base_models_register_upload_list_get(api, tmp_path):
    hub = api.base_models.create("hub-dit", "dit", {"kind": "hub", "repo_id": "acme/dit"})
    assert isinstance(hub, BaseModelInfo) and hub.status == "pending" and hub.location["repo_id"] == "acme/dit"
    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "DiTPipeline"}')
    uploaded = api.base_models.upload(folder, name="uploaded", family="dit")
    assert uploaded.location["kind"] == "upload" and uploaded.name == "uploaded"
    assert [m.id for m in api.base_models.list(limit=1)] == [uploaded.id, hub.id]
    assert api.base_models.get(hub.id).name == "hub-dit"
    with pytest.raises(WaitTimeout, match="still pending"):  # no checks worker here
        api.base_models.wait_ready(hub.id, timeout=0)
    with pytest.raises(Invalid) as err:
        api.base_models.create("x", "nope", {"kind": "hub", "repo_id": "acme/dit"})
    assert err.value.status == 422 and "family" in err.value.fields


def test_jobs_create_list_across_pages_get_cancel(api, make_job, bm, ds):
    first, second, third = make_job(), make_job(), make_job(max_steps=30)
    assert isinstance(first, Job) and first.status == "queued" and first.hyperparameters["max_steps"] == 20
    assert third.progress.total_steps == 30 and not third.finished
    assert [j.id for j in api.jobs.list(limit=1)] == [third.id, second.id, first.id]
    cancelled = api.jobs.cancel(second.id)
    assert cancelled.status == "cancelled" and cancelled.finished
    assert [j.id for j in api.jobs.list(status="cancelled", limit=1)] == [second.id]
    assert api.jobs.get(first.id).id == first.id
    with pytest.raises(Conflict):
        api.jobs.cancel(second.id)
    again = api.jobs.create(bm.id, ds.id, hyperparameters={"max_steps": 20, "resolution": 16},
                            idempotency_key="same")
    assert api.jobs.create(bm.id, ds.id, hyperparameters={"max_steps": 20, "resolution": 16},
                           idempotency_key="same").id == again.id
    spread = api.jobs.create(bm.id, ds.id, hyperparameters={"max_steps": 20, "resolution": 16}, gpus=2, nodes=2)
    assert spread.resources == {"gpus": 2, "nodes": 2}  # one GPU on each of two hosts


def test_job_events_as_pages_and_as_a_stream(api, make_job, db):
    job = make_job()
    run_to_success(db, job.id)
    events = list(api.jobs.events(job.id, limit=2))
    assert [e.message for e in events] == ["job queued", "claimed by w1", "step 5", "step 10", "job succeeded"]
    assert events[2].data == {"step": 5, "attempt": 1, "loss": 0.2}
    stream = api.jobs.events(job.id, stream=True)
    assert [e.id for e in stream] == [e.id for e in events] and stream.status == "succeeded"
    resumed = api.jobs.events(job.id, stream=True, after=events[2].id)
    assert [e.message for e in resumed] == ["step 10", "job succeeded"]
    assert [e.message for e in api.jobs.events(job.id, after=events[3].id)] == ["job succeeded"]
    finished = api.jobs.wait(job.id)
    assert finished.status == "succeeded" and finished.progress.step == 10
    assert api.jobs.metrics(job.id).job_id == job.id


def test_event_stream_follows_a_running_job_until_it_ends(api, make_job, db):
    from core.services import job_events, jobs

    job = make_job()
    jobs.claim(db, job_id=job.id, worker="w1")
    seen = []
    stream = api.jobs.events(job.id, stream=True)
    for event in stream:
        seen.append(event.message)
        if event.message == "claimed by w1":
            job_events.create(db, job_id=job.id, message="live event")
            jobs.mark_failed(db, job_id=job.id, error="boom")
    assert seen[-2:] == ["live event", "job failed: boom"] and stream.status == "failed"
    with pytest.raises(WaitTimeout):
        api.jobs.wait(make_job().id, timeout=0)


def test_checkpoints_samples_and_probes_download_from_s3(api, make_job, db, storage, tmp_path, monkeypatch):
    from core.services import jobs, outputs
    from core.storage.keys import sample_key

    job = make_job()
    jobs.claim(db, job_id=job.id, worker="w1")
    publish_checkpoint(db, storage, job.id, 5, {"model_index.json": b"{}"})
    weights = b"w" * 300_000
    publish_checkpoint(db, storage, job.id, 10, {"model_index.json": b'{"_class_name": "DiTPipeline"}',
                                                 "transformer/diffusion_pytorch_model.safetensors": weights})
    storage.put_stream(sample_key(job.id, 10), io.BytesIO(b"png bytes"), content_type="image/png")
    outputs.create_sample(db, job_id=job.id, step=10)
    db.commit()
    jobs.mark_succeeded(db, job_id=job.id, attempt=1, step=10)

    assert [c.step for c in api.jobs.checkpoints.list(job.id)] == [5, 10]
    progress: dict[str, tuple[int, int | None]] = {}
    out = api.jobs.checkpoints.download(job.id, dest_dir=tmp_path / "ckpt",
                                        progress=lambda path, done, total: progress.update({path: (done, total)}))
    assert (out / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    assert progress["transformer/diffusion_pytorch_model.safetensors"] == (300_000, 300_000)
    assert sorted(p.name for p in out.rglob("*")) == ["diffusion_pytorch_model.safetensors", "model_index.json",
                                                      "transformer"]  # no temporary files left
    monkeypatch.chdir(tmp_path)
    older = api.jobs.checkpoints.download(job.id, 5)  # default folder: JOB_ID/step_0000005
    assert older == Path(job.id) / "step_0000005" and (older / "model_index.json").read_bytes() == b"{}"
    with pytest.raises(NotFound) as err:
        api.jobs.checkpoints.download(job.id, 7, tmp_path / "x")
    assert "step 7" in str(err.value) and "one of 5, 10" in str(err.value)
    grid = api.jobs.samples.download(job.id, dest_dir=tmp_path / "samples")
    assert grid.name == "step_0000010.png" and grid.read_bytes() == b"png bytes"
    assert api.jobs.reports.list(job.id) == []

    probe = api.jobs.forgetting_probes.create(job.id, points=3, samples_per_class=2)
    assert probe.kind == "forgetting_probe" and probe.status == "queued"


def test_download_links_of_a_local_store_go_through_the_api_client(settings, db, auth, tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app

    local = settings.model_copy(update={"storage_url": f"file://{tmp_path}/store", "public_url": "http://testserver"})
    with TestClient(create_app(local)) as http:
        api = make_client(http, auth)
        store = http.app.state.storage
        store.put_stream("jobs/job_x/samples/step_0000001.png", io.BytesIO(b"grid"))
        url = store.url_for("jobs/job_x/samples/step_0000001.png", expires_in=60)
        path = api._core.download(url, tmp_path / "out" / "grid.png", name="grid.png")
        assert path.read_bytes() == b"grid" and api._core._download_http is None  # never needed


def test_errors_carry_the_problem_fields(api, other_api, make_job, client, monkeypatch):
    job = make_job()
    with pytest.raises(NotFound) as err:
        other_api.jobs.get(job.id)
    assert err.value.status == 404 and err.value.detail == f"no job with id {job.id!r}"
    with pytest.raises(Invalid) as err:
        make_job(bank_share=5)
    invalid = err.value
    assert invalid.status == 422 and invalid.fields == ["hyperparameters.bank_share"]
    assert str(invalid).startswith("hyperparameters.bank_share: ") and invalid.title == "Invalid request"

    monkeypatch.delenv("DIFFTUNE_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="DIFFTUNE_API_KEY"):
        Client(http=client)
    with pytest.raises(Unauthorized):
        make_client(client, {"Authorization": "Bearer dtk_wrong"}).jobs.get(job.id)


def test_api_keys_webhooks_health_and_readiness(api, client, make_job):
    created = api.api_keys.create("ci")
    assert isinstance(created, ApiKeyCreated) and created.secret.startswith(created.prefix)
    assert {k.name for k in api.api_keys.list()} >= {"ci"}
    second = make_client(client, {"Authorization": f"Bearer {created.secret}"})
    assert second.datasets.list().to_list() == api.datasets.list().to_list()  # the same tenant
    api.api_keys.revoke(created.id)
    with pytest.raises(Unauthorized):
        second.datasets.list()
    assert api.health() == {"status": "ok"} and api.ready()["status"] == "ok"
    secret = api.webhooks.secret()
    assert secret.secret.startswith("whsec_") and api.webhooks.rotate_secret().secret != secret.secret
    assert api.jobs.webhook_deliveries(make_job().id).to_list() == []


def test_webhook_endpoint_get_set_delete(api, other_api, make_job, db):
    with pytest.raises(NotFound):
        api.webhooks.endpoint.get()
    made = api.webhooks.endpoint.set("https://hooks.example.com/all", events=["job.succeeded"])
    assert isinstance(made, WebhookEndpoint) and made.events == ["job.succeeded"]
    assert api.webhooks.endpoint.get() == made
    with pytest.raises(NotFound):
        other_api.webhooks.endpoint.get()
    with pytest.raises(Invalid) as invalid:
        api.webhooks.endpoint.set("ftp://hooks.example.com/x")
    assert invalid.value.fields == ["url"]
    job = make_job()
    run_to_success(db, job.id)
    [delivery] = api.jobs.webhook_deliveries(job.id).to_list()
    assert (delivery.event, delivery.target, delivery.url) == ("job.succeeded", "tenant", made.url)
    api.webhooks.endpoint.delete()
    with pytest.raises(NotFound):
        api.webhooks.endpoint.delete()


def test_zip_of_a_folder_keeps_relative_paths(image_folder, tmp_path):
    from difftune_client.resources import zip_folder

    with zipfile.ZipFile(zip_folder(image_folder, tmp_path / "x.zip")) as archive:
        names = archive.namelist()
    assert names == sorted(names) and "class_0/img_0.png" in names and ".DS_Store" not in names
