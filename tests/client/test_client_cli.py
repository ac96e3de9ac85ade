"""``difftune datasets | base-models | jobs`` against the real app (the client on FastAPI's TestClient)."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from difftune_client import cli
from tests.client.conftest import ENV, ok, publish_checkpoint, run_to_success


def test_upload_register_create_list_get_cancel(difftune, image_folder, tmp_path):
    dataset = json.loads(ok(difftune("datasets", "upload", image_folder, "--name", "shapes", "--json")))
    assert dataset["name"] == "shapes" and dataset["num_images"] == 6
    assert "class_0, class_1" in ok(difftune("datasets", "get", dataset["id"]))
    assert dataset["id"] in ok(difftune("datasets", "list"))
    assert "16x16" in ok(difftune("datasets", "buckets", dataset["id"], "--resolution", "16", "--bucket-step", "8"))

    model = json.loads(ok(difftune("base-models", "create", "--name", "tiny", "--family", "dit",
                                   "--location", "s3://models/tiny-dit", "--json")))
    assert model["status"] == "pending" and model["location"] == {"kind": "s3", "uri": "s3://models/tiny-dit"}
    hub = json.loads(ok(difftune("base-models", "create", "--name", "hub", "--family", "dit",
                                 "--location", "hub:acme/dit@v1", "--json")))
    assert hub["location"] == {"kind": "hub", "repo_id": "acme/dit", "revision": "v1"}
    listed = ok(difftune("base-models", "list"))
    assert model["id"] in listed and hub["id"] in listed and "pending" in listed
    assert "s3://models/tiny-dit" in ok(difftune("base-models", "get", model["id"]))

    config = tmp_path / "config.yaml"
    config.write_text("family: dit\nbase_model: /somewhere\nmax_steps: 50\nresolution: 16\nbank: {size: 8}\n")
    created = difftune("jobs", "create", "--base-model", model["id"], "--dataset", dataset["id"], "--config", config,
                       "--set", "max_steps=20", "--set", "bank_share=0.25", "--set", "bank.batch_size=4",
                       "--metadata", "team=vision", "--json")
    job = json.loads(ok(created))
    assert "base_model and family ignored" in created.stderr
    hp = job["hyperparameters"]
    assert (hp["max_steps"], hp["bank_share"], hp["bank"]["size"], hp["bank"]["batch_size"]) == (20, 0.25, 8, 4)
    assert job["metadata"] == {"team": "vision"} and job["status"] == "queued"
    shown = ok(difftune("jobs", "get", job["id"]))
    assert "queued" in shown and "0/20" in shown
    assert job["id"] in ok(difftune("jobs", "list", "--status", "queued"))
    assert ok(difftune("jobs", "cancel", job["id"])).strip() == f"{job['id']} cancelled"
    assert json.loads(ok(difftune("jobs", "list", "--status", "cancelled", "--json")))[0]["id"] == job["id"]
    assert job["id"] not in ok(difftune("jobs", "list", "--status", "queued"))


def test_logs_follow_wait_and_download(difftune, api, make_job, db, storage, tmp_path):
    from core.services import jobs

    job = make_job()
    run_to_success(db, job.id)
    logs = ok(difftune("jobs", "logs", job.id)).splitlines()
    assert len(logs) == 5 and "[status] job queued" in logs[0] and logs[-1].endswith("job succeeded")
    followed = ok(difftune("jobs", "logs", job.id, "--follow")).splitlines()
    assert followed[:-1] == logs and followed[-1] == f"-- {job.id} succeeded"
    as_json = [json.loads(line) for line in ok(difftune("jobs", "logs", job.id, "--json")).splitlines()]
    assert [e["message"] for e in as_json][-1] == "job succeeded"
    assert ok(difftune("jobs", "wait", job.id)).startswith(f"{job.id} succeeded  step 10/20")

    failed = make_job()
    jobs.claim(db, job_id=failed.id, worker="w1")
    publish_checkpoint(db, storage, failed.id, 4, {"model_index.json": b"{}", "vae/config.json": b'{"a": 1}'})
    jobs.mark_failed(db, job_id=failed.id, error="out of memory")
    result = difftune("jobs", "wait", failed.id)
    assert result.exit_code == 1 and result.stderr.strip() == f"error: job {failed.id} failed: out of memory"

    result = difftune("jobs", "download", failed.id, "--out", tmp_path / "ckpt")
    assert f"checkpoint step 4: 2 files in {tmp_path / 'ckpt'}" in ok(result)
    assert (tmp_path / "ckpt" / "vae" / "config.json").read_bytes() == b'{"a": 1}'
    assert "4" in ok(difftune("jobs", "checkpoints", failed.id))


def test_errors_are_one_line_and_exit_1(difftune, make_job, client, monkeypatch):
    missing = difftune("jobs", "get", "job_nope")
    assert missing.exit_code == 1 and missing.stderr == "error: no job with id 'job_nope'\n"
    job = make_job()
    invalid = difftune("jobs", "create", "--base-model", job.base_model, "--dataset", job.dataset,
                       "--set", "bank_share=5")
    assert invalid.exit_code == 1 and invalid.stderr.startswith("error: hyperparameters.bank_share: ")
    assert len(invalid.stderr.splitlines()) == 1
    bad_set = difftune("jobs", "create", "--base-model", "bm_x", "--dataset", "ds_x", "--set", "max_steps")
    assert bad_set.exit_code == 1 and "--set expects KEY=VALUE" in bad_set.stderr
    bad_location = difftune("base-models", "create", "--name", "n", "--family", "dit", "--location", "ftp://x")
    assert bad_location.exit_code == 1 and "--location" in bad_location.stderr
    no_file = difftune("datasets", "upload", "/nonexistent/data")
    assert no_file.exit_code == 1 and "no such file or folder" in no_file.stderr

    monkeypatch.undo()  # the real client factory, with no API key in the environment
    monkeypatch.delenv("DIFFTUNE_API_KEY", raising=False)
    app = typer.Typer()
    cli.register(app)
    no_key = CliRunner().invoke(app, ["jobs", "list"], env=ENV)
    assert no_key.exit_code == 1 and "DIFFTUNE_API_KEY" in no_key.stderr and "Traceback" not in no_key.output


def test_location_and_set_parsing():
    assert cli.parse_location("checkpoint:job_1@20") == {"kind": "checkpoint", "job_id": "job_1", "step": 20}
    assert cli.parse_location("/srv/models/dit") == {"kind": "local", "path": "/srv/models/dit"}
    assert cli.parse_location("local:/m") == {"kind": "local", "path": "/m"}
    assert cli.parse_location('{"kind": "hub", "repo_id": "a/b"}') == {"kind": "hub", "repo_id": "a/b"}
    assert cli.parse_sets(["learning_rate=1e-4", "aspect_buckets=true", "sampler=ddim", "labels=[1, 2]",
                           "bank_label=null"]) == {"learning_rate": 1e-4, "aspect_buckets": True, "sampler": "ddim",
                                                   "labels": [1, 2], "bank_label": None}
