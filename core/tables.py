"""SQLAlchemy 2 tables: tenants, API keys, datasets, base models, jobs and their outputs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Id = String(40)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Tenant(Base):
    """A team; every resource belongs to exactly one."""

    __tablename__ = "tenant"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key, stored as its sha256; ``prefix`` identifies it in listings."""

    __tablename__ = "api_key"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Dataset(Base):
    """A validated, normalised dataset stored under ``datasets/{id}/``."""

    __tablename__ = "dataset"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    layout: Mapped[str] = mapped_column(String(20))  # contract.families.DatasetLayout
    num_images: Mapped[int]
    num_classes: Mapped[int | None]
    classes: Mapped[list[Any] | None]
    stats: Mapped[dict[str, Any]]
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    storage_prefix: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RegisteredModel(Base):
    """A base model a tenant registered (diffusers format); the worker checks it loads.

    Named apart from pydantic's ``BaseModel``; the table and the API call it a base model."""

    __tablename__ = "base_model"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    family: Mapped[str] = mapped_column(String(20))  # api_name of a contract.families entry
    location: Mapped[dict[str, Any]]  # {"kind": "s3"|"local"|"hub", ...}
    status: Mapped[str] = mapped_column(String(20), default="pending")  # core.enums.BaseModelStatus
    error: Mapped[str | None] = mapped_column(Text)
    image_size: Mapped[int | None]  # pixels the model generates; known once a worker has loaded it
    resolutions: Mapped[dict[str, Any] | None]  # contract.families.Resolutions as a dict, once loaded
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """A job — tuning (``kind='tune'``) or an analysis of a tuned job (``forgetting_probe``):
    request, progress, latest metrics and outcome."""

    __tablename__ = "job"
    __table_args__ = (Index("ix_job_status_heartbeat_at", "status", "heartbeat_at"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(30), default="tune", server_default="tune")
    base_model_id: Mapped[str | None] = mapped_column(ForeignKey("base_model.id", ondelete="SET NULL"))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("dataset.id", ondelete="SET NULL"))
    method: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="queued")  # core.enums.JobStatus
    hyperparameters: Mapped[dict[str, Any]]
    validation_prompts: Mapped[list[Any] | None]
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    resume_from: Mapped[dict[str, Any] | None]  # {"job_id", "step"}: the checkpoint a job starts from
    webhook: Mapped[dict[str, Any] | None]  # {"url", "events"}: where the job's events are POSTed
    step: Mapped[int] = mapped_column(default=0)
    total_steps: Mapped[int | None]
    eta_at: Mapped[datetime | None]
    metrics: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    @property
    def gpus(self) -> int:
        """GPUs the job runs on in all (``resources.gpus``, default 1)."""
        return int((self.resources or {}).get("gpus") or 1)

    @property
    def nodes(self) -> int:
        """Hosts the job runs on (``resources.nodes``, default 1), each with ``gpus_per_node`` GPUs."""
        return int((self.resources or {}).get("nodes") or 1)

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // self.nodes


class JobEvent(Base):
    """One line of a job's log: status changes, progress, warnings, errors."""

    __tablename__ = "job_event"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    level: Mapped[str] = mapped_column(String(10), default="info")
    type: Mapped[str] = mapped_column(String(30), default="message")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobNode(Base):
    """One host's slot in the gang of a multi-node job's attempt (``core.services.gangs``).

    The worker that claimed the job holds node 0 (the torchrun rendezvous host; ``rendezvous`` says where
    and what to run); the other slots are ``open`` until a worker that took a join task claims one.
    Rows live as long as the attempt's torchrun job."""

    __tablename__ = "job_node"
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), primary_key=True)
    node: Mapped[int] = mapped_column(primary_key=True)
    attempt: Mapped[int]
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | joined | leaving | failed | closed
    worker: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(300))
    rendezvous: Mapped[dict[str, Any] | None]  # node 0: endpoint, nodes, nproc_per_node, checkpoint
    outcome: Mapped[dict[str, Any] | None]  # node 0: how training ended, written by global rank 0
    error: Mapped[str | None] = mapped_column(Text)
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobMetric(Base):
    """A job's training figures at one logged step (every ``log_every`` steps, unthrottled): the series
    ``GET /v1/jobs/{id}/metrics`` plots. A resumed attempt re-logs steps after its checkpoint over the
    old rows."""

    __tablename__ = "job_metric"
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(primary_key=True)
    loss: Mapped[float | None] = mapped_column(Float)
    loss_target: Mapped[float | None] = mapped_column(Float)
    loss_bank: Mapped[float | None] = mapped_column(Float)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    images_per_sec: Mapped[float | None] = mapped_column(Float)
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))  # latest metric, if any
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookSecret(Base):
    """A tenant's webhook signing secret (Standard Webhooks ``whsec_…``), made on first use."""

    __tablename__ = "webhook_secret"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEndpoint(Base):
    """A tenant's webhook endpoint: every job event of the tenant is POSTed there too (set with
    ``PUT /v1/webhooks/endpoint``); ``events`` null means all of them."""

    __tablename__ = "webhook_endpoint"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event of a job on its way to a webhook (the outbox row and its delivery log): the job's own
    (``target='job'``), the tenant's endpoint (``tenant``) or both when they are the same URL (``both``)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_status_next_attempt_at", "status", "next_attempt_at"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(10), default="job", server_default="job")  # job | tenant | both
    url: Mapped[str] = mapped_column(String(2000))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(default=0)
    response_status: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class Checkpoint(Base):
    """A published checkpoint folder at ``jobs/{job_id}/checkpoints/step_0001200/`` (core.storage.keys)."""

    __tablename__ = "checkpoint"
    __table_args__ = (UniqueConstraint("job_id", "step"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    step: Mapped[int]
    storage_prefix: Mapped[str] = mapped_column(String(300))
    metrics: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Sample(Base):
    """A published sample grid at ``jobs/{job_id}/samples/step_0001200.png``."""

    __tablename__ = "sample"
    __table_args__ = (UniqueConstraint("job_id", "step"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    step: Mapped[int]
    storage_key: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    """The resource a POST with an ``Idempotency-Key`` created, and a hash of its request."""

    __tablename__ = "idempotency_key"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    scope: Mapped[str] = mapped_column(String(30), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(Id)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
