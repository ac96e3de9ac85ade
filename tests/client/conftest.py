"""Client fixtures: a ``difftune_client.Client`` on the real app (FastAPI's TestClient as its ``http``),
for two tenants, objects made through it, and ``difftune`` to run the client's CLI commands."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from difftune_client import BaseModelInfo, Client, Dataset, Job, cli

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def make_client(http, headers: dict[str, str], **kwargs) -> Client:
    """A client of ``http`` (a TestClient) with the key of ``headers``; retries without sleeping."""
    api = Client(api_key=headers["Authorization"].removeprefix("Bearer "), http=http, **kwargs)
    api._core.sleep = lambda seconds: None
    return api


@pytest.fixture
def api(client, auth) -> Client:
    """Tenant acme's client."""
    return make_client(client, auth)


@pytest.fixture
def other_api(client, other_auth) -> Client:
    """Tenant globex's client."""
    return make_client(client, other_auth)


@pytest.fixture
def difftune(client, auth, monkeypatch):
    """Run ``difftune ARGS…`` (the client commands) as tenant acme, or with the key of ``headers=``;
    returns the result (``stdout`` and ``stderr`` apart)."""
    current = {"headers": auth}
    monkeypatch.setattr(cli, "client_factory", lambda base_url: make_client(client, current["headers"]))
    app = typer.Typer()
    cli.register(app)

    def invoke(*args, headers: dict[str, str] | None = None):
        current["headers"] = headers or auth
        return CliRunner().invoke(app, [str(a) for a in args], env=ENV, catch_exceptions=False)

    return invoke


def ok(result) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.exit_code == 0, result.output
    return result.stdout


def failed(result) -> str:
    """The one ``error: …`` line of a command that must have failed with exit code 1."""
    assert result.exit_code == 1, result.output
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output, result.stderr
    return result.stderr.strip()


@pytest.fixture
def image_folder(tmp_path, archives) -> Path:
    """Class folders: 2 classes × 3 images of 16 px (and a hidden file the upload skips)."""
    root = tmp_path / "images"
    for name, data in archives.class_folders().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / ".DS_Store").write_bytes(b"junk")
    return root


@pytest.fixture
def ds(api, image_folder) -> Dataset:
    return api.datasets.upload(image_folder, name="shapes")


@pytest.fixture
def bm(api) -> BaseModelInfo:
    return api.base_models.create("tiny-dit", "dit", {"kind": "s3", "uri": "s3://models/tiny-dit"})


@pytest.fixture
def make_job(api, bm, ds):
    def make(**hyperparameters) -> Job:
        return api.jobs.create(bm, ds, hyperparameters={"max_steps": 20, "resolution": 16, **hyperparameters})

    return make


def run_to_success(db, job_id: str) -> None:
    """What a worker does to a job, without one: claim, two progress steps, success."""
    from core.services import jobs

    jobs.claim(db, job_id=job_id, worker="w1")
    for step in (5, 10):
        jobs.update_progress(db, job_id=job_id, attempt=1, step=step, eta_seconds=30, metrics={"loss": 1 / step},
                             message=f"step {step}")
    jobs.mark_succeeded(db, job_id=job_id, attempt=1)


def publish_checkpoint(db, storage, job_id: str, step: int, files: dict[str, bytes]) -> None:
    """Store a checkpoint's files and record it, as the worker's publisher does."""
    import io

    from core.services import outputs
    from core.storage.keys import checkpoint_prefix

    for path, data in files.items():
        storage.put_stream(checkpoint_prefix(job_id, step) + path, io.BytesIO(data))
    outputs.create_checkpoint(db, job_id=job_id, step=step, metrics={"loss": 0.1})
    db.commit()
