"""Embedded mode: the same API on SQLite, a SQLite (kombu sqlalchemy) broker and a local directory."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import Settings
from migrations import upgrade

# kombu's SQLAlchemy transport uses a loader strategy SQLAlchemy 2.1 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:kombu.*")


@pytest.fixture
def embedded(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/difftune.db"
    upgrade(url)
    settings = Settings(
        database_url=url,
        broker_url=f"sqla+sqlite:///{tmp_path}/broker.db",
        storage_url=f"file://{tmp_path}/store",
        public_url="http://testserver",
        cache_dir=tmp_path / "cache",
        model_roots=["/m"],
        bootstrap_tenant="local",
    )
    with TestClient(create_app(settings)) as client:
        key = capsys.readouterr().out.strip().rsplit(" ", 1)[-1]
        yield client, {"Authorization": f"Bearer {key}"}


def test_full_request_flow_without_servers(embedded, archives):
    client, auth = embedded
    assert client.get("/readyz").status_code == 200
    dataset = client.post(
        "/v1/datasets", headers=auth, files={"file": ("d.zip", archives.zip(archives.class_folders()))}
    )
    assert dataset.status_code == 201, dataset.text
    model = client.post(
        "/v1/base-models",
        headers=auth,
        json={"name": "m", "family": "dit", "location": {"kind": "local", "path": "/m"}},
    ).json()
    body = {"base_model": model["id"], "dataset": dataset.json()["id"], "hyperparameters": {"max_steps": 3, "resolution": 16}}
    job = client.post("/v1/jobs", headers={**auth, "Idempotency-Key": "a"}, json=body)
    assert job.status_code == 201 and job.json()["status"] == "queued"
    again = client.post("/v1/jobs", headers={**auth, "Idempotency-Key": "a"}, json=body)
    assert again.json()["id"] == job.json()["id"]
    assert client.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=auth).json()["status"] == "cancelled"
    events = client.get(f"/v1/jobs/{job.json()['id']}/events", headers=auth).json()["data"]
    assert [e["message"] for e in events] == ["job queued", "job cancelled before it started"]
