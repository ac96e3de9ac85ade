"""The service under test: the real API in a subprocess on a fresh, seeded PostgreSQL database."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.service.common import DEFAULT_BROKER, DEFAULT_PG_ADMIN, MIB, log

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Service:
    """A running API: where it listens, a key's headers, a seeded job, its process and work folder."""

    base_url: str
    headers: dict[str, str]
    job_id: str
    pid: int
    workdir: Path
    server: dict
    database_url: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin(admin_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql)


def _tiny_tar() -> bytes:
    """A 2-class × 2-image class-folder tar (the seeded job's dataset)."""
    from PIL import Image

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for c in range(2):
            for i in range(2):
                png = io.BytesIO()
                Image.new("RGB", (16, 16), (90 * c, 40 * i, 120)).save(png, format="PNG")
                info = tarfile.TarInfo(f"class_{c}/img_{i}.png")
                info.size = png.tell()
                png.seek(0)
                archive.addfile(info, png)
    out.seek(0)
    return out.getvalue()


def _seed(settings) -> tuple[str, str]:
    """A tenant and key, a base model, a dataset and one queued job (not enqueued); (secret, job id)."""
    from core.datasets.archive import Limits
    from core.db import make_engine, make_sessionmaker
    from core.services import api_keys, base_models, datasets, jobs
    from core.storage import make_storage

    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            key, secret = api_keys.create(session, tenant_name="bench", name="bench")
            model = base_models.create(
                session,
                tenant_id=key.tenant_id,
                name="bench-dit",
                family="dit",
                location={"kind": "hub", "repo_id": "bench/dit"},
                settings=settings,
            )
            dataset = datasets.create(
                session,
                tenant_id=key.tenant_id,
                name="bench-seed",
                stream=io.BytesIO(_tiny_tar()),
                storage=make_storage(settings),
                limits=Limits(100, 10 * MIB, 100.0),
                workdir=settings.cache_dir / "uploads",
            )
            job = jobs.create(
                session,
                tenant_id=key.tenant_id,
                base_model_id=model.id,
                dataset_id=dataset.id,
                method="difftune",
                hyperparameters={"resolution": 16},  # the seed images are 16 px
            )
            return secret, job.id
    finally:
        engine.dispose()


@contextmanager
def service(
    *, pg_admin_url: str = DEFAULT_PG_ADMIN, broker_url: str = DEFAULT_BROKER, upload_bytes: int = 0
) -> Iterator[Service]:
    """Start the API on a fresh database; stop it and drop everything afterwards."""
    from core.settings import Settings
    from migrations import upgrade

    workdir = Path(tempfile.mkdtemp(prefix="difftune-bench-"))
    name = f"difftune_bench_{secrets.token_hex(4)}"
    database_url = pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
    env = {
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "STORAGE_URL": f"file://{workdir / 'storage'}",
        "CACHE_DIR": str(workdir / "cache"),
        "SIGNING_SECRET": secrets.token_hex(16),
        # Admit the generated archive with room to spare (defaults: 2 GiB packed, 8 GiB unpacked).
        "MAX_UPLOAD_BYTES": str(max(2 * 1024**3, 2 * upload_bytes)),
        "MAX_EXTRACTED_BYTES": str(max(8 * 1024**3, 4 * upload_bytes)),
        "MAX_UPLOAD_FILES": str(max(200_000, 4 * upload_bytes // (512 * 1024))),
        # One key sends the whole load: counted (the Redis round trip is part of the latency), never refused.
        "RATE_LIMIT": "1000000/second",
    }
    _admin(pg_admin_url, f'CREATE DATABASE "{name}"')
    proc: subprocess.Popen | None = None
    server_log = workdir / "server.log"
    try:
        log(f"database {name}: migrating and seeding")
        upgrade(database_url)
        settings = Settings(**{k.lower(): v for k, v in env.items()})
        secret, job_id = _seed(settings)
        port = free_port()
        server = {"app": "api.main:app", "workers": 1, "loop": "auto", "http": "auto", "access_log": False}
        command = [
            sys.executable, "-m", "uvicorn", "--factory", server["app"], "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFTUNE_")}
        child_env.update({f"DIFFTUNE_{k}": v for k, v in env.items()})
        with open(server_log, "wb") as out:
            proc = subprocess.Popen(command, cwd=REPO, env=child_env, stdout=out, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}"
        _wait_healthy(base_url, proc, server_log)
        log(f"server pid {proc.pid} on {base_url}")
        yield Service(base_url, {"Authorization": f"Bearer {secret}"}, job_id, proc.pid, workdir, server,
                      database_url)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:
            _admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_healthy(base_url: str, proc: subprocess.Popen, server_log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}:\n{server_log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"the API did not become healthy in {timeout:.0f} s:\n{server_log.read_text()[-4000:]}"
    )
