"""Object storage behind one small interface: S3 (boto3) or a local directory."""

from __future__ import annotations

from core.settings import Settings
from core.storage.base import Storage, StorageError
from core.storage.local import LocalStorage
from core.storage.s3 import S3Storage

__all__ = ["LocalStorage", "S3Storage", "Storage", "StorageError", "make_storage"]


def make_storage(settings: Settings) -> Storage:
    """The backend that ``settings.storage_url`` names."""
    location = settings.storage
    if location.scheme == "s3":
        return S3Storage(
            bucket=location.bucket,
            prefix=location.prefix,
            endpoint_url=settings.s3_endpoint,
            public_endpoint_url=settings.s3_public_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
            region=settings.s3_region,
        )
    secret = settings.signing_secret.get_secret_value() if settings.signing_secret else None
    return LocalStorage(location.path, base_url=settings.public_url, signing_secret=secret)
