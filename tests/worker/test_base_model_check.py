"""Registering a base model enqueues a load check; the worker marks it ready or failed."""

from __future__ import annotations

import json

from core.tables import RegisteredModel


def test_registration_enqueues_a_check(client, auth, redis_client, tiny_base_dir):
    body = {"name": "tiny", "family": "dit", "location": {"kind": "local", "path": str(tiny_base_dir)}}
    model = client.post("/v1/base-models", headers=auth, json=body).json()
    assert model["status"] == "pending"
    messages = [json.loads(m) for m in redis_client.lrange("gpu", 0, -1)]
    tasks = [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages]
    assert ("worker.tasks.check_base_model", repr([model["id"]])) in tasks


def test_check_marks_ready_or_failed_with_the_reason(client, auth, db, tiny_base_dir, tmp_path, settings, monkeypatch):
    from worker import context as context_module
    from worker.checks import check_base_model

    context_module.context.cache_clear()
    for name, value in {"DATABASE_URL": settings.database_url, "STORAGE_URL": settings.storage_url,
                        "S3_ENDPOINT": settings.s3_endpoint, "CACHE_DIR": str(settings.cache_dir)}.items():
        monkeypatch.setenv(f"DIFFTUNE_{name}", value)
    good = client.post("/v1/base-models", headers=auth, json={
        "name": "ok", "family": "dit", "location": {"kind": "local", "path": str(tiny_base_dir)}}).json()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "model_index.json").write_text("{}")
    bad = client.post("/v1/base-models", headers=auth, json={
        "name": "bad", "family": "dit", "location": {"kind": "local", "path": str(tmp_path / "empty")}}).json()
    try:
        assert check_base_model(good["id"]) == "ready"
        assert check_base_model(bad["id"]) == "failed"
    finally:
        context_module.context.cache_clear()
    assert client.get(f"/v1/base-models/{good['id']}", headers=auth).json()["status"] == "ready"
    failed = db.get(RegisteredModel, bad["id"], populate_existing=True)
    assert failed.status == "failed" and "not a diffusers DiT folder" in failed.error
