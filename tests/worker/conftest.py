"""Worker fixtures: a tiny base model on disk, a job created through the REST API, worker env."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY_HYPERPARAMETERS = {
    "resolution": 16, "batch_size": 4, "max_steps": 6, "checkpoint_every": 3, "sample_every": 6,
    "log_every": 1, "sample_steps": 2, "keep_checkpoints": 2, "ema_warmup": True, "learning_rate": 1e-3,
    "bank": {"size": 4, "batch_size": 4, "num_inference_steps": 2},
}


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    from models.tiny import build_tiny_dit_pipeline

    return build_tiny_dit_pipeline(tmp_path_factory.mktemp("worker_base") / "dit", resolution=16,
                                   id2label={0: "a", 1: "b"})


@pytest.fixture
def make_job(client, auth, archives, tiny_base_dir):
    """POST a dataset, a base model (local folder) and a job through the API; return the job JSON."""

    def make(extra: dict | None = None, **hyperparameters) -> dict:
        """``extra``: more fields of the job's POST body (e.g. a webhook)."""
        data = archives.zip(archives.class_folders(classes=2, per_class=3))
        dataset = client.post("/v1/datasets", headers=auth, files={"file": ("d.zip", data)})
        assert dataset.status_code == 201, dataset.text
        body = {"name": "tiny", "family": "dit", "location": {"kind": "local", "path": str(tiny_base_dir)}}
        model = client.post("/v1/base-models", headers=auth, json=body)
        assert model.status_code == 201, model.text
        job = client.post("/v1/jobs", headers=auth, json={
            "base_model": model.json()["id"], "dataset": dataset.json()["id"], "method": "difftune",
            "hyperparameters": {**TINY_HYPERPARAMETERS, **hyperparameters}, **(extra or {})})
        assert job.status_code == 201, job.text
        return job.json()

    return make


@pytest.fixture
def worker_ctx(settings, monkeypatch):
    """The worker's context on the test's settings."""
    from worker import context as context_module

    context_module.context.cache_clear()
    for name, value in {"DATABASE_URL": settings.database_url, "BROKER_URL": settings.broker_url,
                        "STORAGE_URL": settings.storage_url, "S3_ENDPOINT": settings.s3_endpoint,
                        "S3_ACCESS_KEY": settings.s3_access_key,
                        "S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
                        "CACHE_DIR": str(settings.cache_dir)}.items():
        monkeypatch.setenv(f"DIFFTUNE_{name}", value)
    yield context_module.context()
    context_module.context.cache_clear()


def worker_env(settings, **extra: str) -> dict[str, str]:
    """Environment that points a worker process at the test's database, broker and storage."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "DIFFTUNE_DATABASE_URL": settings.database_url, "DIFFTUNE_BROKER_URL": settings.broker_url,
           "DIFFTUNE_STORAGE_URL": settings.storage_url, "DIFFTUNE_S3_ENDPOINT": settings.s3_endpoint,
           "DIFFTUNE_S3_ACCESS_KEY": settings.s3_access_key or "",
           "DIFFTUNE_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else "",
           "DIFFTUNE_CACHE_DIR": str(settings.cache_dir)}
    env.update(extra)
    return env


def start_worker(env: dict[str, str], log: Path, queues: str = "gpu,checks") -> subprocess.Popen:
    """A real ``celery worker`` process (solo pool) on ``queues``."""
    cmd = [sys.executable, "-m", "celery", "--app", "worker.app:app", "worker", "--pool=solo", "--queues", queues,
           "--concurrency", "1", "--prefetch-multiplier", "1", "--loglevel", "INFO", "--without-gossip",
           "--without-mingle", "--without-heartbeat"]
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")
