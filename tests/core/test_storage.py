"""Both storage backends against real endpoints: moto's S3 server and a local directory."""

from __future__ import annotations

import io
import time

import httpx
import pytest

from core.storage import LocalStorage, S3Storage, Storage, StorageError


class Exploding(io.RawIOBase):
    """A stream that fails after ``after`` bytes, like a client that disconnects mid-upload."""

    def __init__(self, after: int):
        self.left = after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            raise OSError("connection lost")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


@pytest.fixture(params=["s3", "local"])
def backend(request, storage, tmp_path) -> Storage:
    if request.param == "s3":
        return storage
    return LocalStorage(tmp_path / "store", base_url="http://testserver", signing_secret="s")


def test_round_trip_list_and_delete(backend, tmp_path):
    backend.put_stream("jobs/j1/a.txt", io.BytesIO(b"alpha"))
    source = tmp_path / "b.bin"
    source.write_bytes(b"beta")
    backend.put_file("jobs/j1/sub/b.bin", source)
    backend.put_stream("jobs/j2/c.txt", io.BytesIO(b"gamma"))
    assert backend.list("jobs/j1/") == ["jobs/j1/a.txt", "jobs/j1/sub/b.bin"]
    backend.get_file("jobs/j1/sub/b.bin", tmp_path / "out" / "b.bin")
    assert (tmp_path / "out" / "b.bin").read_bytes() == b"beta"
    assert backend.delete_prefix("jobs/j1/") == 2
    assert backend.list("jobs/") == ["jobs/j2/c.txt"]


def test_download_prefix_mirrors_the_keys_under_a_folder(backend, tmp_path):
    backend.put_stream("jobs/j1/checkpoints/step_0000002/model_index.json", io.BytesIO(b"{}"))
    backend.put_stream("jobs/j1/checkpoints/step_0000002/unet/weights.bin", io.BytesIO(b"w"))
    backend.put_stream("jobs/j1/checkpoints/step_0000004/model_index.json", io.BytesIO(b"later"))
    keys = backend.download_prefix("jobs/j1/checkpoints/step_0000002/", tmp_path / "ckpt")
    assert len(keys) == 2 and (tmp_path / "ckpt" / "unet" / "weights.bin").read_bytes() == b"w"
    assert sorted(p.name for p in (tmp_path / "ckpt").rglob("*") if p.is_file()) == ["model_index.json",
                                                                                     "weights.bin"]
    assert backend.download_prefix("jobs/none/", tmp_path / "empty") == []


def test_download_prefix_never_writes_outside_its_folder(storage, tmp_path):
    """A bucket the workers read may hold keys no upload of ours would write (S3 allows `..`)."""
    storage.client.put_object(Bucket=storage.bucket, Key=storage.prefix + "models/m/../../escape.txt", Body=b"x")
    storage.client.put_object(Bucket=storage.bucket, Key=storage.prefix + "models/m/unet/", Body=b"")
    storage.put_stream("models/m/model_index.json", io.BytesIO(b"{}"))
    with pytest.raises(StorageError, match="leaves the folder"):
        storage.download_prefix("models/m/", tmp_path / "model")
    assert not (tmp_path / "escape.txt").exists()


def test_failed_write_leaves_no_object(backend):
    with pytest.raises((OSError, StorageError)):
        backend.put_stream("datasets/d/data.tar", Exploding(after=3 * 1024**2))
    assert backend.list("") == []


def test_rejects_keys_that_climb_out(backend):
    with pytest.raises(StorageError):
        backend.put_stream("../escape.txt", io.BytesIO(b"x"))


def test_s3_multipart_upload_and_presigned_url(storage):
    assert isinstance(storage, S3Storage)
    payload = bytes(range(256)) * (70 * 1024)  # 17.5 MiB: above the multipart threshold
    storage.put_stream("big.bin", io.BytesIO(payload), content_type="application/octet-stream")
    response = httpx.get(storage.url_for("big.bin", expires_in=60))
    assert response.status_code == 200 and response.content == payload


def test_local_links_are_signed_and_expire(tmp_path):
    store = LocalStorage(tmp_path, base_url="http://api", signing_secret="s")
    url = store.url_for("jobs/j/samples/step_0000010.png", expires_in=60)
    query = dict(httpx.URL(url).params)
    assert url.startswith("http://api/v1/files/jobs/j/samples/step_0000010.png?")
    assert store.verify("jobs/j/samples/step_0000010.png", int(query["expires"]), query["signature"])
    assert not store.verify("jobs/j/samples/other.png", int(query["expires"]), query["signature"])
    past = int(time.time()) - 1
    assert not store.verify(
        "jobs/j/samples/step_0000010.png", past, store.sign("jobs/j/samples/step_0000010.png", past)
    )


def test_check_reports_a_missing_bucket(settings):
    store = S3Storage(
        bucket="no-such-bucket-here", endpoint_url=settings.s3_endpoint, access_key="a", secret_key="b"
    )
    with pytest.raises(StorageError, match="no-such-bucket-here"):
        store.check()
