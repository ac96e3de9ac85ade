"""Shared fixtures: a throw-away PostgreSQL database, Redis, an S3 endpoint (moto unless
``DIFFTUNE_S3_ENDPOINT`` is set), settings, the API client, tenants with keys, archive builders.

Each test starts from empty tables (truncation), an empty Redis db and its own storage prefix.
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("DIFFTUNE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DIFFTUNE_TEST_REDIS", "redis://127.0.0.1:6379/13")


# --- PostgreSQL ---------------------------------------------------------------------------------


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def make_pg_database() -> Iterator:
    """A factory of empty throw-away databases, all dropped at the end of the session."""
    created: list[str] = []

    def make() -> str:
        name = f"difftune_test_{secrets.token_hex(4)}"
        _admin(f'CREATE DATABASE "{name}"')
        created.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    yield make
    for name in created:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url(make_pg_database) -> str:
    """The session's database, migrated to head."""
    from migrations import upgrade

    url = make_pg_database()
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def engine(pg_url):
    from core.db import make_engine

    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def _truncate(engine) -> None:
    from sqlalchemy import text

    from core.tables import Base

    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
def db(engine) -> Iterator:
    """A session on empty tables."""
    from core.db import make_sessionmaker

    _truncate(engine)
    with make_sessionmaker(engine)() as session:
        yield session


# --- Redis and S3 -------------------------------------------------------------------------------


@pytest.fixture
def redis_client():
    """The test Redis database, emptied."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``DIFFTUNE_S3_ENDPOINT`` when set, else a moto S3 server on a free port."""
    if endpoint := os.environ.get("DIFFTUNE_S3_ENDPOINT"):
        yield endpoint
        return
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


S3_KEYS = {
    "s3_access_key": os.environ.get("DIFFTUNE_S3_ACCESS_KEY", "testing"),
    "s3_secret_key": os.environ.get("DIFFTUNE_S3_SECRET_KEY", "testing"),
    "s3_region": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint) -> str:
    import boto3

    bucket = f"difftune-test-{secrets.token_hex(4)}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=S3_KEYS["s3_access_key"],
        aws_secret_access_key=S3_KEYS["s3_secret_key"],
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    return bucket


# --- settings, app, tenants ---------------------------------------------------------------------


@pytest.fixture
def settings(pg_url, s3_endpoint, s3_bucket, tmp_path, tmp_path_factory):
    """Settings on the test PostgreSQL, Redis and a per-test S3 prefix; small upload limits; local
    base models allowed anywhere under pytest's temporary folder (but its cache_dir)."""
    from core.settings import Settings

    return Settings(
        database_url=pg_url,
        broker_url=REDIS_URL,
        storage_url=f"s3://{s3_bucket}/t-{secrets.token_hex(4)}",
        s3_endpoint=s3_endpoint,
        **S3_KEYS,
        max_upload_bytes=2 * 1024**2,
        max_extracted_bytes=4 * 1024**2,
        max_upload_files=50,
        max_decompression_ratio=20,
        cache_dir=tmp_path / "cache",
        signing_secret="test-secret",
        rate_limit="1000/second",  # tests of the limit itself set a low one
        model_roots=[tmp_path_factory.getbasetemp(), "/m", "/models", "/srv/models"],
        model_s3_prefixes=["s3://models"],
    )


@pytest.fixture
def storage(settings):
    """The per-test S3 storage."""
    from core.storage import make_storage

    return make_storage(settings)


@pytest.fixture
def app(settings, db, redis_client):
    from api.app import create_app

    return create_app(settings, poll_seconds=0.05)


@pytest.fixture
def client(app) -> Iterator:
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        yield client


def _key_headers(db, tenant: str) -> dict[str, str]:
    from core.services import api_keys

    _, secret = api_keys.create(db, tenant_name=tenant)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def auth(db) -> dict[str, str]:
    """Headers of a key of tenant ``acme``."""
    return _key_headers(db, "acme")


@pytest.fixture
def other_auth(db) -> dict[str, str]:
    """Headers of a key of tenant ``globex``."""
    return _key_headers(db, "globex")


# --- archives -----------------------------------------------------------------------------------


class Archives:
    """Builders of small image datasets as zip or tar bytes."""

    @staticmethod
    def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (16, 16)) -> bytes:
        from PIL import Image

        out = io.BytesIO()
        Image.new("RGB", size, color).save(out, format="PNG")
        return out.getvalue()

    def class_folders(self, classes: int = 2, per_class: int = 3) -> dict[str, bytes]:
        return {
            f"class_{c}/img_{i}.png": self.png((40 * c, 10 * i, 90))
            for c in range(classes)
            for i in range(per_class)
        }

    def captioned(self, n: int = 3, conditioning: bool = False) -> dict[str, bytes]:
        import json

        files: dict[str, bytes] = {}
        lines = []
        for i in range(n):
            files[f"images/{i}.png"] = self.png((10 * i, 80, 120))
            row = {"file_name": f"images/{i}.png", "text": f"a photo number {i}"}
            if conditioning:
                files[f"conditioning/{i}.png"] = self.png((0, 0, 10 * i))
                row["conditioning_file_name"] = f"conditioning/{i}.png"
            lines.append(json.dumps(row))
        files["metadata.jsonl"] = "\n".join(lines).encode()
        return files

    @staticmethod
    def zip(files: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
            for name, target in (symlinks or {}).items():
                info = zipfile.ZipInfo(name)
                info.external_attr = 0o120777 << 16
                archive.writestr(info, target)
        return out.getvalue()

    @staticmethod
    def tar(
        files: dict[str, bytes], *, links: dict[str, str] | None = None, hard: bool = False, gz: bool = True
    ) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz" if gz else "w") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            for name, target in (links or {}).items():
                info = tarfile.TarInfo(name)
                info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
                info.linkname = target
                archive.addfile(info)
        return out.getvalue()


@pytest.fixture
def archives() -> Archives:
    return Archives()


@pytest.fixture
def workdir(tmp_path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP spinning makes tiny models ~100x slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
