"""S3-compatible storage through boto3: streaming multipart uploads and presigned GET URLs.

Presigned URLs name ``public_endpoint_url`` when given (the address clients use), while every read
and write goes to ``endpoint_url``.

A multipart upload is invisible until ``CompleteMultipartUpload`` (boto3 aborts it on failure), so an
object under its final key is always complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.storage.base import Storage, StorageError, check_key

TRANSFER = TransferConfig(
    multipart_threshold=16 * 1024**2, multipart_chunksize=16 * 1024**2, max_concurrency=4
)


class S3Storage(Storage):
    """Objects under ``s3://bucket/prefix/``."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
    ):
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        credentials = dict(aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region,
                           config=Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"}))
        self.client = boto3.client("s3", endpoint_url=endpoint_url, **credentials)
        # The host is part of a presigned URL's signature, so links for clients that reach the store
        # under another name (compose: containers use http://minio:9000, the host localhost:9000) are
        # signed by a client of that endpoint. Presigning is local: this client never connects.
        self.presigner = (boto3.client("s3", endpoint_url=public_endpoint_url, **credentials)
                          if public_endpoint_url and public_endpoint_url != endpoint_url else self.client)

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put_stream(self, key: str, stream: BinaryIO, *, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else None
        try:
            self.client.upload_fileobj(stream, self.bucket, self._full(key), ExtraArgs=extra, Config=TRANSFER)
        except (BotoCoreError, ClientError) as err:
            raise StorageError(f"upload of {key!r} failed: {err}") from err

    def get_file(self, key: str, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        try:
            self.client.download_file(self.bucket, self._full(key), str(tmp), Config=TRANSFER)
            tmp.replace(path)
        except (BotoCoreError, ClientError) as err:
            raise StorageError(f"download of {key!r} failed: {err}") from err
        finally:
            tmp.unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        keys = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                keys += [obj["Key"][len(self.prefix) :] for obj in page.get("Contents", [])]
        except (BotoCoreError, ClientError) as err:
            raise StorageError(f"listing {prefix!r} failed: {err}") from err
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self.prefix + k} for k in keys[start : start + 1000]]
            try:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except (BotoCoreError, ClientError) as err:
                raise StorageError(f"deleting {prefix!r} failed: {err}") from err
        return len(keys)

    def url_for(self, key: str, *, expires_in: int = 3600) -> str:
        return self.presigner.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._full(key)}, ExpiresIn=expires_in
        )

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as err:
            raise StorageError(f"bucket {self.bucket!r} is not reachable: {err}") from err
