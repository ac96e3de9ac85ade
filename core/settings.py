"""Infrastructure configuration: one validated ``Settings`` read from ``DIFFTUNE_*`` env vars."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "DIFFTUNE_"


class SettingsError(ValueError):
    """The environment holds an invalid setting; the message names the env variable."""


class StorageLocation:
    """A parsed ``storage_url``: ``s3://bucket/prefix`` or ``file:///dir``."""

    def __init__(self, scheme: str, bucket: str = "", prefix: str = "", path: Path | None = None):
        self.scheme, self.bucket, self.prefix, self.path = scheme, bucket, prefix, path


def parse_storage_url(url: str) -> StorageLocation:
    """Parse a storage URL; raise ``ValueError`` explaining the accepted forms."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"s3 URL needs a bucket, e.g. s3://bucket/prefix (got {url!r})")
        return StorageLocation("s3", bucket=parts.netloc, prefix=parts.path.strip("/"))
    if parts.scheme == "file":
        raw = url[len("file://") :]
        if not raw:
            raise ValueError(f"file URL needs a directory, e.g. file:///var/lib/difftune (got {url!r})")
        return StorageLocation("file", path=Path(raw).expanduser().resolve())
    raise ValueError(f"must be s3://bucket/prefix or file:///dir (got {url!r})")


class Settings(BaseSettings):
    """Every infrastructure knob of the service; hyperparameters live in the library's TrainConfig."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # --- backing services -------------------------------------------------------------------
    database_url: str = Field(
        "sqlite:///.cache/difftune/difftune.db", description="SQLAlchemy URL (PostgreSQL or SQLite)."
    )
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker URL.")
    storage_url: str = Field(
        "file://.cache/difftune/storage", description="s3://bucket/prefix or file:///dir."
    )
    s3_endpoint: str | None = Field(None, description="S3 endpoint (MinIO, moto); AWS when unset.")
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"

    # --- uploads --------------------------------------------------------------------------------
    max_upload_bytes: int = Field(2 * 1024**3, gt=0, description="Largest accepted dataset archive.")
    max_extracted_bytes: int = Field(8 * 1024**3, gt=0, description="Largest total unpacked size.")
    max_upload_files: int = Field(200_000, gt=0, description="Most files in one dataset archive.")
    max_json_bytes: int = Field(
        1024**2, gt=0, description="Largest JSON request body (jobs, base models); refused with 413 while it streams."
    )
    max_decompression_ratio: float = Field(
        200.0, gt=1.0, description="Largest unpacked/packed size ratio (zip bombs)."
    )

    # --- auth and links --------------------------------------------------------------------------
    bootstrap_tenant: str | None = Field(None, description="Tenant ensured at API start (embedded/compose).")
    bootstrap_api_key: SecretStr | None = Field(
        None, description="API key ensured for bootstrap_tenant; generated and printed when unset."
    )
    signing_secret: SecretStr | None = Field(
        None, description="HMAC secret of local download links; random per process when unset."
    )
    public_url: str = Field("http://127.0.0.1:8000", description="Base URL that local download links use.")
    download_url_ttl: int = Field(3600, gt=0, description="Seconds a download link stays valid.")
    auth_cache_seconds: float = Field(
        5.0, ge=0, description="Seconds a key→tenant lookup is cached (a revoked key works at most this long)."
    )

    # --- jobs -----------------------------------------------------------------------------------
    heartbeat_timeout: int = Field(
        300, gt=0, description="Seconds without heartbeat before a job is requeued."
    )
    max_attempts: int = Field(3, ge=1, description="Worker losses tolerated before a job fails.")
    cache_dir: Path = Field(Path(".cache/difftune"), description="Local cache: uploads, datasets, models.")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(("postgresql", "sqlite")):
            raise ValueError(f"must be a postgresql:// or sqlite:/// URL (got {value!r})")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError(f"must be a URL such as redis://host:6379/0 (got {value!r})")
        return value

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str) -> str:
        parse_storage_url(value)
        return value

    @field_validator("s3_endpoint", "public_url")
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s):// URL (got {value!r})")
        return value.rstrip("/") if value else value

    @cached_property
    def storage(self) -> StorageLocation:
        """The parsed storage URL."""
        return parse_storage_url(self.storage_url)


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; raise ``SettingsError`` naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        lines = [f"{env_name(str(e['loc'][0]))}: {e['msg']}" for e in err.errors()]
        raise SettingsError("invalid settings: " + "; ".join(lines)) from None
