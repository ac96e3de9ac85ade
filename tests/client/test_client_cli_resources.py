"""``difftune api-keys | webhooks`` and the job commands beyond create/list/get (metrics, samples,
reports, forgetting probes, webhook deliveries) against the real app: their output values, and one
error line naming the problem (another tenant's job, a field the API refused) with exit code 1."""

from __future__ import annotations

import io
import json
import re

import pytest

from tests.client.conftest import failed, ok, publish_checkpoint, run_to_success

WRONG_KEY = {"Authorization": "Bearer dtk_not_a_key"}


def fields(output: str) -> dict[str, str]:
    """The name → value lines of a detail grid."""
    return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in output.splitlines() if line.strip())


def rows(output: str) -> list[list[str]]:
    """A table's lines, split on whitespace, header first."""
    return [line.split() for line in output.splitlines() if line.strip()]


def test_api_keys_list_create_revoke(difftune, other_auth):
    key = json.loads(ok(difftune("api-keys", "create", "--name", "ci", "--json")))
    assert key["name"] == "ci" and key["secret"].startswith(key["prefix"]) and key["revoked_at"] is None
    shown = difftune("api-keys", "create", "--name", "laptop")
    laptop = fields(ok(shown))
    assert laptop["name"] == "laptop" and laptop["secret"].startswith(laptop["prefix"])
    assert shown.stderr == "note: store the secret now; the service shows it only once\n"

    listed = rows(ok(difftune("api-keys", "list")))
    assert listed[0] == ["ID", "NAME", "PREFIX", "CREATED", "REVOKED"]
    by_id = {row[0]: row for row in listed[1:]}
    assert by_id[key["id"]][1:3] == ["ci", key["prefix"]] and by_id[key["id"]][-1] == "-"
    assert len(by_id) == 3  # the fixture's key (no name), ci and laptop

    assert ok(difftune("api-keys", "revoke", key["id"])) == f"revoked {key['id']}\n"
    after = {k["id"]: k for k in json.loads(ok(difftune("api-keys", "list", "--json")))}
    assert after[key["id"]]["revoked_at"] is not None and after[laptop["id"]]["revoked_at"] is None
    revoked = {"Authorization": f"Bearer {key['secret']}"}
    assert failed(difftune("api-keys", "list", headers=revoked)) == "error: unknown or revoked API key"
    assert ok(difftune("api-keys", "revoke", laptop["prefix"])) == f"revoked {laptop['prefix']}\n"  # or by prefix

    assert failed(difftune("api-keys", "revoke", laptop["id"], headers=other_auth)) == \
        f"error: no API key with id {laptop['id']!r}"
    assert failed(difftune("api-keys", "create", "--name", "x" * 101)).startswith("error: name: ")
    assert failed(difftune("api-keys", "create", headers=WRONG_KEY)) == "error: unknown or revoked API key"


def test_webhook_secret_rotation_and_a_jobs_deliveries(difftune, make_job, db, other_auth):
    secret = json.loads(ok(difftune("webhooks", "secret", "--json")))
    assert secret["secret"].startswith("whsec_")
    shown = fields(ok(difftune("webhooks", "secret")))
    assert shown["secret"] == secret["secret"]
    rotated = json.loads(ok(difftune("webhooks", "secret", "--rotate", "--json")))
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret["secret"]
    assert json.loads(ok(difftune("webhooks", "secret", "--json")))["secret"] == rotated["secret"]
    assert failed(difftune("webhooks", "secret", headers=WRONG_KEY)) == "error: unknown or revoked API key"

    template = make_job()
    create = ["jobs", "create", "--base-model", template.base_model, "--dataset", template.dataset,
              "--set", "max_steps=20", "--set", "resolution=16"]
    url = "https://hooks.example.com/difftune"
    job = json.loads(ok(difftune(*create, "--webhook", url, "--webhook-event", "job.running",
                                 "--webhook-event", "job.succeeded", "--validation-label", "1", "--json")))
    assert job["webhook"] == {"url": url, "events": ["job.running", "job.succeeded"]}
    assert job["hyperparameters"]["validation_labels"] == [1]
    assert json.loads(ok(difftune("jobs", "webhook-deliveries", job["id"], "--json"))) == []
    run_to_success(db, job["id"])
    deliveries = json.loads(ok(difftune("jobs", "webhook-deliveries", job["id"], "--json")))
    assert [(d["event"], d["status"], d["url"]) for d in deliveries] == [("job.running", "pending", url),
                                                                        ("job.succeeded", "pending", url)]
    table = rows(ok(difftune("jobs", "webhook-deliveries", job["id"])))
    assert table[0][:5] == ["ID", "EVENT", "STATUS", "ATTEMPTS", "ANSWER"]
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in table[1:]] == [
        (d["id"], d["event"], "pending", "0", "-") for d in deliveries]

    assert failed(difftune(*create, "--webhook-event", "job.failed")) == "error: --webhook-event needs --webhook URL"
    assert failed(difftune(*create, "--webhook", "ftp://hooks.example.com/x")).startswith(
        "error: webhook.url: must be an http:// or https:// URL")
    assert failed(difftune("jobs", "webhook-deliveries", job["id"], headers=other_auth)) == \
        f"error: no job with id {job['id']!r}"


def test_webhook_endpoint_set_get_delete_and_its_deliveries(difftune, make_job, db, other_auth):
    url = "https://hooks.example.com/all"
    assert failed(difftune("webhooks", "endpoint", "get")).startswith("error: no webhook endpoint is set")
    made = json.loads(ok(difftune("webhooks", "endpoint", "set", url, "--event", "job.running",
                                  "--event", "job.succeeded", "--json")))
    assert (made["object"], made["url"], made["events"]) == ("webhook.endpoint", url, ["job.running", "job.succeeded"])
    shown = fields(ok(difftune("webhooks", "endpoint", "get")))
    assert (shown["url"], shown["events"]) == (url, "job.running, job.succeeded")
    assert json.loads(ok(difftune("webhooks", "endpoint", "get", "--json"))) == made
    assert failed(difftune("webhooks", "endpoint", "get", headers=other_auth)).startswith("error: no webhook endpoint")
    assert failed(difftune("webhooks", "endpoint", "set", "ftp://hooks.example.com/x")).startswith(
        "error: url: must be an http:// or https:// URL")
    assert failed(difftune("webhooks", "endpoint", "set", url, "--event", "job.nope")).startswith("error: events")

    job = make_job()  # no webhook of its own: its events go to the endpoint only
    run_to_success(db, job.id)
    table = rows(ok(difftune("jobs", "webhook-deliveries", job.id)))
    assert table[0][-2:] == ["TARGET", "URL"]
    assert [(r[1], r[-2], r[-1]) for r in table[1:]] == [("job.running", "tenant", url),
                                                          ("job.succeeded", "tenant", url)]

    assert fields(ok(difftune("webhooks", "endpoint", "set", url)))["events"] == "all"
    assert ok(difftune("webhooks", "endpoint", "delete")) == "deleted the webhook endpoint\n"
    assert failed(difftune("webhooks", "endpoint", "delete")).startswith("error: no webhook endpoint")


def test_metrics_history_as_a_table_as_json_and_zoomed(difftune, make_job, db):
    from core.services import job_metrics

    job = make_job()
    assert ok(difftune("jobs", "metrics", job.id)) == f"no metrics recorded for {job.id}\n"
    for step in (10, 20, 30, 40):
        job_metrics.record(db, job_id=job.id, step=step, figures={
            "loss": 1 / step, "loss_target": 2 / step, "loss_bank": 0.5 if step < 40 else None,
            "learning_rate": 1e-4, "images_per_sec": 10.0 + step,
            **({"evaluation": {"metric": "fd", "fd": 12.5, "history": [[40, 12.5]]}} if step == 40 else {})})
    db.commit()

    output = ok(difftune("jobs", "metrics", job.id))
    assert rows(output)[:5] == [["STEP", "LOSS", "TARGET", "BANK", "LR", "IMG/S"],
                                ["10", "0.1", "0.2", "0.5", "1.00e-04", "20.0"],
                                ["20", "0.05", "0.1", "0.5", "1.00e-04", "30.0"],
                                ["30", "0.03333", "0.06667", "0.5", "1.00e-04", "40.0"],
                                ["40", "0.025", "0.05", "-", "1.00e-04", "50.0"]]
    assert output.splitlines()[-2:] == ["4 rows of 4 logged steps", 'evaluation: {"metric": "fd", "fd": 12.5}']

    history = json.loads(ok(difftune("jobs", "metrics", job.id, "--json")))
    assert (history["total_points"], history["downsampled"]) == (4, False)
    assert history["data"][0] == {"step": 10, "loss": 0.1, "loss_target": 0.2, "loss_bank": 0.5,
                                  "learning_rate": 1e-4, "images_per_sec": 20.0}
    averaged = ok(difftune("jobs", "metrics", job.id, "--max-points", "2"))
    assert [r[0] for r in rows(averaged)[1:3]] == ["20", "40"] and rows(averaged)[1][5] == "25.0"
    assert "2 rows of 4 logged steps (each row averages a step range" in averaged
    zoom = json.loads(ok(difftune("jobs", "metrics", job.id, "--from-step", "20", "--to-step", "30", "--json")))
    assert [p["step"] for p in zoom["data"]] == [20, 30]
    assert ok(difftune("jobs", "metrics", job.id, "--from-step", "50")).startswith("no metrics recorded")

    assert failed(difftune("jobs", "metrics", job.id, "--from-step", "30", "--to-step", "10")) == \
        "error: to_step: 10 is before from_step 30"
    assert failed(difftune("jobs", "metrics", job.id, "--max-points", "1")).startswith("error: max_points: ")


def test_sample_grids_and_reports_list_and_download(difftune, make_job, db, storage, tmp_path):
    from core.services import jobs, outputs
    from core.storage.keys import report_key, sample_key

    job = make_job()
    jobs.claim(db, job_id=job.id, worker="w1")
    for step in (5, 10):
        storage.put_stream(sample_key(job.id, step), io.BytesIO(f"grid {step}".encode()), content_type="image/png")
        outputs.create_sample(db, job_id=job.id, step=step)
    db.commit()
    reports = {"probe.json": b'{"t_stars": [0, 500]}', "probe.png": b"png"}
    for name, data in reports.items():
        storage.put_stream(report_key(job.id, name), io.BytesIO(data))

    samples = json.loads(ok(difftune("jobs", "samples", "list", job.id, "--json")))
    assert [s["step"] for s in samples] == [5, 10] and all(s["url"].startswith("http") for s in samples)
    table = rows(ok(difftune("jobs", "samples", "list", job.id)))
    assert table[0] == ["STEP", "ID", "CREATED"] and [r[:2] for r in table[1:]] == [["5", samples[0]["id"]],
                                                                                     ["10", samples[1]["id"]]]
    latest = ok(difftune("jobs", "samples", "download", job.id, "--out", tmp_path / "grids"))
    assert latest == f"sample grid: {tmp_path / 'grids' / 'step_0000010.png'}\n"
    ok(difftune("jobs", "samples", "download", job.id, "--step", "5", "--out", tmp_path / "grids"))
    assert {p.name: p.read_bytes() for p in (tmp_path / "grids").iterdir()} == {
        "step_0000010.png": b"grid 10", "step_0000005.png": b"grid 5"}  # no temporary .part files left
    assert failed(difftune("jobs", "samples", "download", job.id, "--step", "7")) == \
        f"error: job {job.id} has no sample grid at step 7"

    listed = json.loads(ok(difftune("jobs", "reports", "list", job.id, "--json")))
    assert sorted(r["name"] for r in listed) == ["probe.json", "probe.png"]
    table = rows(ok(difftune("jobs", "reports", "list", job.id)))
    assert table[0] == ["NAME"] and sorted(table[1:]) == [["probe.json"], ["probe.png"]]
    out = tmp_path / "reports"
    downloaded = ok(difftune("jobs", "reports", "download", job.id, "--out", out))
    assert downloaded.startswith("2 report files: ") and str(out / "probe.png") in downloaded
    assert {p.name: p.read_bytes() for p in out.iterdir()} == reports
    other = make_job()
    assert failed(difftune("jobs", "reports", "download", other.id)) == \
        f"error: job {other.id} has no report files (yet)"
    assert failed(difftune("jobs", "samples", "download", other.id)) == f"error: job {other.id} has no sample grid"


def test_forgetting_probes_start_list_get(difftune, make_job, db, storage):
    from core.services import jobs

    tuned = make_job()
    jobs.claim(db, job_id=tuned.id, worker="w1")
    for step in (4, 8):
        publish_checkpoint(db, storage, tuned.id, step, {"model_index.json": b"{}"})
    jobs.mark_succeeded(db, job_id=tuned.id, attempt=1, step=8)

    first = json.loads(ok(difftune("jobs", "forgetting-probes", "start", tuned.id, "--checkpoint-step", "4",
                                   "--points", "3", "--samples-per-class", "2", "--guidance", "1",
                                   "--guidance", "2.5", "--guidance-mode", "domain", "--metadata", "run=a", "--json")))
    assert (first["kind"], first["status"], first["metadata"]) == ("forgetting_probe", "queued", {"run": "a"})
    assert first["hyperparameters"].items() >= {"tuned_job": tuned.id, "checkpoint_step": 4, "points": 3,
                                                "samples_per_class": 2, "guidance": [1.0, 2.5], "sample_steps": 25,
                                                "seed": 0, "guidance_mode": "domain"}.items()
    shown = fields(ok(difftune("jobs", "forgetting-probes", "start", tuned.id)))
    second = shown["id"]
    assert (shown["kind"], shown["tuned job"], shown["checkpoint step"]) == ("forgetting_probe", tuned.id, "8")
    assert json.loads(shown["parameters"])["points"] == 11
    assert json.loads(shown["parameters"])["guidance_mode"] == "cfg"

    listed = rows(ok(difftune("jobs", "forgetting-probes", "list", tuned.id)))
    assert listed[0] == ["ID", "STATUS", "TUNED", "JOB", "CHECKPOINT", "PROGRESS", "CREATED"]
    assert [r[:4] for r in listed[1:]] == [[second, "queued", tuned.id, "8"], [first["id"], "queued", tuned.id, "4"]]
    assert listed[1][4] == "0/22" and listed[2][4] == "0/12"  # directions × guidances × points
    assert [p["id"] for p in json.loads(ok(difftune("jobs", "forgetting-probes", "list", "--json")))] == \
        [second, first["id"]]
    assert json.loads(ok(difftune("jobs", "forgetting-probes", "list", make_job().id, "--json"))) == []

    jobs.claim(db, job_id=first["id"], worker="w2")
    curves = {"checkpoint_step": 4, "t_stars": [0, 500, 999],
              "fd": {"tuned→base": {"1": [10.0, 20.5, 30.25], "2.5": [9.0, 19.0, 29.0]}},
              "class_fidelity": {"tuned→base": {"1": [0.9, 0.5, 0.1]}}}
    jobs.mark_succeeded(db, job_id=first["id"], attempt=1, step=12, metrics=curves)
    got = rows(ok(difftune("jobs", "forgetting-probes", "get", first["id"])))
    header = next(i for i, r in enumerate(got) if r[0] == "T*")
    assert got[header] == ["T*", "FD", "tuned→base", "g=1", "FD", "tuned→base", "g=2.5", "CLASS", "FID.",
                           "tuned→base", "g=1"]
    assert got[header + 1:] == [["0", "10.000", "9.000", "0.900"], ["500", "20.500", "19.000", "0.500"],
                                ["999", "30.250", "29.000", "0.100"]]
    assert ["status", "succeeded"] in got and ["progress", "12/12"] in got
    assert json.loads(ok(difftune("jobs", "forgetting-probes", "get", first["id"], "--json")))["metrics"] == curves

    assert failed(difftune("jobs", "forgetting-probes", "get", tuned.id)) == \
        f"error: {tuned.id} is a tune job, not a forgetting probe (difftune jobs get {tuned.id})"
    assert failed(difftune("jobs", "forgetting-probes", "start", tuned.id, "--checkpoint-step", "7")) == \
        f"error: checkpoint_step: {tuned.id} has no checkpoint at step 7 (has [4, 8])"
    assert failed(difftune("jobs", "forgetting-probes", "start", tuned.id, "--points", "1")).startswith(
        "error: points: ")
    assert failed(difftune("jobs", "forgetting-probes", "start", tuned.id, "--guidance-mode", "base")).startswith(
        "error: guidance_mode: ")


JOB_COMMANDS = [
    ("jobs", "metrics"), ("jobs", "webhook-deliveries"), ("jobs", "samples", "list"),
    ("jobs", "samples", "download"), ("jobs", "reports", "list"), ("jobs", "reports", "download"),
    ("jobs", "forgetting-probes", "start"), ("jobs", "forgetting-probes", "list"),
    ("jobs", "forgetting-probes", "get"),
]


@pytest.mark.parametrize("command", JOB_COMMANDS, ids=" ".join)
def test_another_tenants_job_is_one_error_line(difftune, make_job, other_auth, command, tmp_path, monkeypatch):
    job = make_job()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # where the downloads would go by default
    result = difftune(*command, job.id, headers=other_auth)
    assert failed(result) == f"error: no job with id {job.id!r}"
    assert not any((tmp_path / "cwd").iterdir())  # nothing was downloaded
