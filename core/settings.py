"""Infrastructure configuration: one validated ``Settings`` read from ``DIFFTUNE_*`` env vars."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    s3_public_endpoint: str | None = Field(
        None, description="S3 endpoint that presigned download links name (what clients reach); s3_endpoint when unset."
    )
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
    max_model_upload_bytes: int = Field(
        16 * 1024**3, gt=0, description="Largest accepted base-model archive (POST /v1/base-models/upload)."
    )
    max_image_pixels: int = Field(
        36_000_000, gt=0, description="Most pixels in one uploaded image (6000x6000); checked from the header, "
        "before decoding, so a small file cannot expand to gigabytes."
    )
    max_concurrent_validations: int = Field(
        2, gt=0, description="Uploads validated at once per API process; more wait, then get 503 with Retry-After."
    )

    # --- tenants: quotas and rate limits ----------------------------------------------------------
    tenant_max_queued_jobs: int = Field(50, gt=0, description="Queued jobs per tenant; more are refused (429).")
    tenant_max_running_jobs: int = Field(
        4, gt=0, description="Jobs of one tenant on workers at once; its other jobs wait while other tenants' run."
    )
    tenant_max_pending_checks: int = Field(
        10, gt=0, description="Base models of one tenant waiting for their load check; more are refused (429)."
    )
    rate_limit: str = Field(
        "20/second;600/minute", description="Requests per API key (limits' notation, e.g. '10/second;300/minute'); "
        "more get 429 with Retry-After."
    )
    rate_limit_storage_url: str | None = Field(
        None, description="Where rate-limit counters live (redis://…, or memory:// for one API process); the "
        "broker's Redis when unset and the broker is Redis, else memory://."
    )

    # --- where base models may come from --------------------------------------------------------
    model_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Folders under which tenants may register `local` base models "
        "(JSON list or comma-separated); none by default, so `local` locations are refused."
    )
    model_s3_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="s3://bucket/prefix locations under which tenants may register `s3` "
        "base models; none by default. The service's own storage area is never allowed."
    )

    # --- webhooks --------------------------------------------------------------------------------
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Hosts (and their subdomains) webhooks may be sent to (JSON list or "
        "comma-separated); any public host when empty."
    )
    webhook_allow_private: bool = Field(
        False, description="Also deliver to private, loopback and link-local addresses (a trusted network only)."
    )
    webhook_max_attempts: int = Field(8, ge=1, le=50, description="Attempts per delivery (back-off 5 s, 10 s, "
                                      "20 s, … up to an hour) before it is marked failed.")
    webhook_timeout_s: float = Field(10.0, gt=0, le=120, description="Seconds a receiver has to answer.")

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
    metrics_token: SecretStr | None = Field(
        None, description="Bearer token GET /metrics requires (Prometheus' `authorization` credentials); open "
        "when unset: its series are aggregate counts that name no tenant or resource."
    )
    auth_cache_seconds: float = Field(
        5.0, ge=0, description="Seconds an API process caches a key→tenant lookup (spares a database query per "
        "request). A revocation clears every process's cache at once through Redis; without Redis keys are "
        "not cached."
    )

    # --- jobs -----------------------------------------------------------------------------------
    heartbeat_timeout: int = Field(
        45, gt=0, description="Seconds without a heartbeat before a job is requeued (workers beat every "
        "timeout/5 s and reapers look every timeout/4 s, so a dead worker's job is requeued within about a minute)."
    )
    max_attempts: int = Field(3, ge=1, description="Worker losses tolerated before a job fails.")
    worker_gpu_memory_gb: float | None = Field(
        None, gt=0, description="GB a memory plan (POST /v1/jobs with dry_run) must fit; default: the worker's "
        "CUDA device memory (none on a CPU worker: the plan reports, it does not judge)."
    )
    cache_dir: Path = Field(Path(".cache/difftune"), description="Local cache: uploads, datasets, models.")

    # --- multi-node jobs ------------------------------------------------------------------------
    worker_gpus: int = Field(
        8, ge=1, le=64, description="GPUs of each GPU worker host (set it alike on the API and the workers): a job "
        "with more resources.gpus runs as one torchrun job on gpus / worker_gpus hosts, unless it names "
        "resources.nodes."
    )
    gang_timeout_s: float = Field(
        600.0, gt=0, description="Seconds the worker that claimed a multi-node job waits for the other hosts to "
        "join before failing it (their slots are released and the joined hosts stop)."
    )
    worker_address: str | None = Field(
        None, description="Address the other workers reach this host at (the torchrun rendezvous of the "
        "multi-node jobs it leads, and its NCCL/gloo traffic); default: this host's address toward the broker."
    )

    @field_validator("model_roots", "model_s3_prefixes", "webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """A JSON list or a comma-separated string."""
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") else [v for v in value.split(",") if v.strip()]
        return [v.strip() if isinstance(v, str) else v for v in value]

    @field_validator("model_roots")
    @classmethod
    def _check_model_roots(cls, value: list[Path]) -> list[Path]:
        if any(not path.is_absolute() for path in value):
            raise ValueError(f"every model root must be an absolute path (got {[str(p) for p in value]})")
        return [path.resolve() for path in value]

    @field_validator("model_s3_prefixes")
    @classmethod
    def _check_model_s3_prefixes(cls, value: list[str]) -> list[str]:
        for uri in value:
            if parse_storage_url(uri).scheme != "s3":
                raise ValueError(f"every model S3 prefix must be s3://bucket/prefix (got {uri!r})")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError(f"must be like '20/second;600/minute' (got {value!r})") from None
        return value

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

    @field_validator("s3_endpoint", "s3_public_endpoint", "public_url")
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
