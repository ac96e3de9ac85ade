"""The API's objects as pydantic models (mirroring the service's response schemas).

Unknown fields are kept (``extra="allow"``), so a newer service does not break an older client;
statuses are plain strings for the same reason (see the ``*_STATUSES`` constants).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

JOB_STATUSES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")
JOB_FINISHED = frozenset({"succeeded", "failed", "cancelled"})
BASE_MODEL_STATUSES = ("pending", "ready", "failed")


class ApiObject(BaseModel):
    """Base of the API's objects."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


class ApiKey(ApiObject):
    id: str
    object: str = "api_key"
    name: str = ""
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKey):
    secret: str = Field(description="The key itself; the service shows it only once.")


class Dataset(ApiObject):
    id: str
    object: str = "dataset"
    name: str
    layout: str
    num_images: int
    num_classes: int | None = None
    classes: list[str] | None = None
    stats: dict[str, Any] = Field(default_factory=dict)
    size_bytes: int = 0
    created_at: datetime


class DatasetBuckets(ApiObject):
    dataset_id: str
    object: str = "dataset.buckets"
    resolution: int
    bucket_step: int
    bucket_max_aspect: float
    histogram: dict[str, int]
    smaller_than_bucket: int


class BaseModelResolutions(ApiObject):
    native: int
    multiple: int | None = None
    largest: int | None = None


class BaseModelInfo(ApiObject):
    """A registered base model (``bm_…``)."""

    id: str
    object: str = "base_model"
    name: str
    family: str
    location: dict[str, Any]
    status: str
    error: str | None = None
    image_size: int | None = None
    resolutions: BaseModelResolutions | None = None
    created_at: datetime


class JobProgress(ApiObject):
    step: int = 0
    total_steps: int | None = None
    eta_seconds: float | None = None
    estimated_finish: datetime | None = None


class Job(ApiObject):
    id: str
    object: str = "job"
    kind: str = "tune"
    status: str
    base_model: str | None = None
    dataset: str | None = None
    method: str
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    validation_prompts: list[str] | None = None
    seed: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)
    resume_from: dict[str, Any] | None = None
    webhook: dict[str, Any] | None = None
    progress: JobProgress = Field(default_factory=JobProgress)
    metrics: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """Whether the job reached a final status (succeeded, failed or cancelled)."""
        return self.status in JOB_FINISHED


class Event(ApiObject):
    """One line of a job's log (``evt_…``)."""

    id: str
    object: str = "job.event"
    created_at: datetime
    level: str = "info"
    type: str
    message: str
    data: dict[str, Any] | None = None


class MetricPoint(ApiObject):
    step: int
    loss: float | None = None
    loss_target: float | None = None
    loss_bank: float | None = None
    learning_rate: float | None = None
    images_per_sec: float | None = None


class JobMetrics(ApiObject):
    object: str = "job.metrics"
    job_id: str
    total_points: int
    downsampled: bool
    data: list[MetricPoint]
    evaluation: dict[str, Any] | None = None


class FileLink(ApiObject):
    path: str
    url: str


class Checkpoint(ApiObject):
    id: str
    object: str = "job.checkpoint"
    step: int
    metrics: dict[str, Any] | None = None
    created_at: datetime
    files: list[FileLink] = Field(default_factory=list)


class Sample(ApiObject):
    id: str
    object: str = "job.sample"
    step: int
    created_at: datetime
    url: str


class Report(ApiObject):
    object: str = "job.report"
    name: str
    url: str


class WebhookDelivery(ApiObject):
    id: str
    object: str = "webhook.delivery"
    event: str
    target: str = "job"  # job | tenant | both: the job's own webhook, the tenant's endpoint, or both (one URL)
    url: str
    status: str
    attempts: int = 0
    response_status: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    created_at: datetime
    delivered_at: datetime | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class WebhookEndpoint(ApiObject):
    object: str = "webhook.endpoint"
    url: str
    events: list[str] | None = None
    created_at: datetime
    updated_at: datetime


class WebhookSecret(ApiObject):
    object: str = "webhook.secret"
    secret: str
    created_at: datetime
