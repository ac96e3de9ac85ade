"""Request and response bodies (shaped after the OpenAI fine-tuning API)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.families import API_FAMILY_NAMES
from contract.train_config import MAX_SEED
from core.enums import BaseModelStatus, DatasetLayout, JobKind, JobStatus
from core.tables import utcnow

T = TypeVar("T")


def nul_free(value: Any, where: str = "") -> Any:
    """``value`` unchanged, or ``ValueError`` naming where a NUL byte hides in it (PostgreSQL
    cannot store one in text or JSON, so it would otherwise surface as a 500)."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError(f"contains a NUL byte{' at ' + where if where else ''}")
    if isinstance(value, dict):
        for key, item in value.items():
            nul_free(key, f"{where}.{key}".lstrip(".") + " (key)")
            nul_free(item, f"{where}.{key}".lstrip("."))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            nul_free(item, f"{where}.{index}".lstrip("."))
    return value


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul_bytes(cls, data: Any) -> Any:
        """Reject NUL bytes anywhere in the body; the message starts with the field (``name: …``)."""
        for name, value in (data.items() if isinstance(data, dict) else ()):
            try:
                nul_free(value)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        return data


class ListResponse(BaseModel, Generic[T]):
    """One page of a list; pass the last ``id`` as ``after`` to get the next."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool


# --- API keys ---------------------------------------------------------------------------------


class ApiKeyCreate(_Request):
    name: str = Field("", max_length=100, description="A label for the key.")


class ApiKeyOut(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it.")
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, row) -> ApiKeyOut:
        return cls.model_validate(row, from_attributes=True)


class ApiKeyCreated(ApiKeyOut):
    secret: str = Field(description="The key itself; shown only in this response.")


# --- datasets ---------------------------------------------------------------------------------


class DatasetOut(BaseModel):
    id: str
    object: Literal["dataset"] = "dataset"
    name: str
    layout: DatasetLayout
    num_images: int
    num_classes: int | None
    classes: list[str] | None
    stats: dict[str, Any]
    size_bytes: int
    created_at: datetime

    @classmethod
    def of(cls, row) -> DatasetOut:
        out = cls.model_validate(row, from_attributes=True)
        out.stats = {k: v for k, v in out.stats.items() if k != "image_sizes"}  # per-size counts: see /buckets
        return out


class DatasetBuckets(BaseModel):
    dataset_id: str
    object: Literal["dataset.buckets"] = "dataset.buckets"
    resolution: int
    bucket_step: int
    bucket_max_aspect: float
    histogram: dict[str, int] = Field(description="Images per bucket, {\"WxH\": count}, tallest first.")
    smaller_than_bucket: int = Field(description="Images smaller than their bucket: refused unless "
                                     "upscale_small_images is set.")


# --- base models ------------------------------------------------------------------------------


class S3Location(_Request):
    kind: Literal["s3"]
    uri: str = Field(pattern=r"^s3://[^/]+(/.*)?$", max_length=2048,
                     description="s3://bucket/prefix of a diffusers folder, under one of the operator's "
                     "allowed prefixes (DIFFTUNE_MODEL_S3_PREFIXES).")


class LocalLocation(_Request):
    kind: Literal["local"]
    path: str = Field(pattern=r"^/", max_length=4096,
                      description="Absolute path of a diffusers folder on the workers, under one of the "
                      "operator's model roots (DIFFTUNE_MODEL_ROOTS).")


class CheckpointLocation(_Request):
    kind: Literal["checkpoint"]
    job_id: str = Field(max_length=64, description="One of your tuning jobs (`job_…`).")
    step: int | None = Field(None, ge=0, le=2**31 - 1, description="Its published checkpoint step; the latest "
                             "when omitted. Checkpoints a base model starts from are never pruned.")


class HubLocation(_Request):
    kind: Literal["hub"]
    repo_id: str = Field(pattern=r"^[\w.-]+(/[\w.-]+)?$", description="Hugging Face hub id (needs network).")
    revision: str | None = Field(None, max_length=200, pattern=r"^[\w./-]+$",
                                 description="Branch, tag or commit the workers download; default the main branch.")


Location = Annotated[S3Location | LocalLocation | HubLocation | CheckpointLocation, Field(discriminator="kind")]


class BaseModelCreate(_Request):
    name: str = Field(min_length=1, max_length=200)
    family: Literal[API_FAMILY_NAMES] = Field(  # type: ignore[valid-type]
        description="Model family (contract.families): " + ", ".join(API_FAMILY_NAMES) + ".")
    location: Location


class BaseModelResolutions(BaseModel):
    native: int
    multiple: int | None
    largest: int | None


class BaseModelOut(BaseModel):
    id: str
    object: Literal["base_model"] = "base_model"
    name: str
    family: str
    location: dict[str, Any]
    status: BaseModelStatus
    error: str | None
    image_size: int | None = Field(description="Pixels the model generates; known once a worker has loaded it.")
    resolutions: BaseModelResolutions | None = Field(
        None, description="Sizes a job may train at, known once a worker has loaded the model: only `native`, or "
        "(SDXL, SD3, Flux) any multiple of `multiple` px up to `largest`.")
    created_at: datetime

    @classmethod
    def of(cls, row) -> BaseModelOut:
        return cls.model_validate(row, from_attributes=True)


# --- jobs -------------------------------------------------------------------------------------


class Resources(_Request):
    gpus: int = Field(1, ge=1, le=512, description="GPUs in all; more than one runs under torchrun, as one "
                      "torchrun job over several hosts when they are more than one worker host has (or `nodes` says so).")
    nodes: int | None = Field(None, ge=1, le=64, description="Hosts to spread the GPUs over (evenly); default: one "
                              "while they fit a worker host, else as many whole hosts as they fill.")


WebhookEvent = Literal["job.running", "job.succeeded", "job.failed", "job.cancelled", "job.checkpoint",
                       "job.sample"]


class WebhookSpec(_Request):
    url: str = Field(max_length=2000, description="http(s) URL the events are POSTed to, signed as Standard "
                     "Webhooks with the tenant's secret (GET /v1/webhooks/secret).")
    events: list[WebhookEvent] | None = Field(None, min_length=1, max_length=6,
                                              description="Events to send; all of them when omitted.")


class JobCreate(_Request):
    base_model: str = Field(description="Id of a registered base model (`bm_…`).")
    dataset: str = Field(description="Id of an uploaded dataset (`ds_…`).")
    method: Literal["difftune", "standard"] | None = Field(None, description="Defaults to `difftune`.")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Fields of the library's TrainConfig (contract.train_config), all but `family` and "
        "`base_model`, which come from the registered base model.",
    )
    validation_labels: list[Annotated[int, Field(ge=0)]] | None = Field(None, max_length=64)
    validation_prompts: list[Annotated[str, Field(max_length=1000)]] | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Defaults to hyperparameters.seed (0).")
    metadata: dict[str, Annotated[str, Field(max_length=512)]] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    resume_from: str | None = Field(
        None, description="Id of a finished tuning job (`job_…`) whose latest checkpoint this job starts from: "
        "after an out-of-memory failure with the change its error names, after a cancel, or to train further. "
        "Same base model, dataset, GPUs, peft/LoRA shape and optimizer; max_steps above that checkpoint's step.")
    webhook: WebhookSpec | None = Field(None, description="Where to POST the job's events (status changes, "
                                        "checkpoints, sample grids).")
    dry_run: bool = Field(
        False, description="Measure instead of train: a job of kind `memory_plan` runs one real step of this job on a "
        "worker and records its memory per process by part (`metrics.memory_plan`); it fails naming the settings to "
        "change when the step does not fit the worker's GPU.")

    @field_validator("metadata")
    @classmethod
    def _few_keys(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 16:
            raise ValueError("at most 16 keys")
        return value


class ForgettingProbeCreate(_Request):
    checkpoint_step: int | None = Field(None, ge=0, description="Checkpoint of the tuned job; default its latest.")
    dataset: str | None = Field(
        None, description="Real target images to score against (class folders); default the tuned job's dataset."
    )
    points: int = Field(11, ge=2, le=51, description="Swap steps t* spread evenly over 0..T.")
    samples_per_class: int = Field(20, ge=2, le=500, description="Images generated per class and point.")
    guidance: list[Annotated[float, Field(ge=1.0, le=20.0)]] = Field(
        default_factory=lambda: [1.0], min_length=1, max_length=4, description="Classifier-free guidance scales."
    )
    sample_steps: int = Field(25, ge=2, le=250, description="DDIM steps of every chain.")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    guidance_mode: Literal["cfg", "domain"] = Field(
        "cfg", description="cfg, or domain: the tuned model's steps take their unconditional branch from the base "
                           "model (Domain Guidance)."
    )
    metadata: dict[str, Annotated[str, Field(max_length=512)]] = Field(default_factory=dict, max_length=16)


class JobProgress(BaseModel):
    step: int
    total_steps: int | None
    eta_seconds: float | None
    estimated_finish: datetime | None


class JobOut(BaseModel):
    id: str
    object: Literal["job"] = "job"
    kind: JobKind = JobKind.TUNE
    status: JobStatus
    base_model: str | None
    dataset: str | None
    method: str
    hyperparameters: dict[str, Any]
    validation_prompts: list[str] | None
    seed: int
    metadata: dict[str, Any]
    resources: dict[str, Any]
    resume_from: dict[str, Any] | None = Field(None, description="The checkpoint (`job_id`, `step`) the job started from.")
    webhook: dict[str, Any] | None = Field(None, description="`url` and `events` its events are POSTed to.")
    progress: JobProgress
    metrics: dict[str, Any] | None
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None

    @classmethod
    def of(cls, row) -> JobOut:
        eta = max(0.0, (row.eta_at - utcnow()).total_seconds()) if row.eta_at else None
        progress = JobProgress(
            step=row.step, total_steps=row.total_steps, eta_seconds=eta, estimated_finish=row.eta_at
        )
        fields = {name: getattr(row, name) for name in cls.model_fields if hasattr(row, name)}
        fields.update(base_model=row.base_model_id, dataset=row.dataset_id, metadata=row.metadata_)
        return cls(**fields, progress=progress)


class EventOut(BaseModel):
    id: str
    object: Literal["job.event"] = "job.event"
    created_at: datetime
    level: str
    type: str
    message: str
    data: dict[str, Any] | None


class MetricPoint(BaseModel):
    step: int
    loss: float | None
    loss_target: float | None = Field(description="The target (reconsolidation) stream's loss.")
    loss_bank: float | None = Field(description="The knowledge bank (retention) stream's loss; null without a bank.")
    learning_rate: float | None
    images_per_sec: float | None


class JobMetricsOut(BaseModel):
    object: Literal["job.metrics"] = "job.metrics"
    job_id: str
    total_points: int = Field(description="Logged steps in the requested range.")
    downsampled: bool = Field(description="True when points are means over equal step ranges (each at its "
                              "range's last step) because the range holds more than max_points.")
    data: list[MetricPoint]
    evaluation: dict[str, Any] | None = Field(description="The convergence metric's latest figures and history.")


class WebhookDeliveryOut(BaseModel):
    id: str
    object: Literal["webhook.delivery"] = "webhook.delivery"
    event: str
    target: Literal["job", "tenant", "both"] = Field(
        description="Whose webhook it goes to: the job's own, the tenant's endpoint, or both (the same URL, sent once).")
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    response_status: int | None = Field(description="What the receiver answered last (null: no answer).")
    error: str | None
    next_attempt_at: datetime | None = Field(description="When a pending delivery is tried again.")
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any] = Field(description="The body that is (or was) sent.")

    @classmethod
    def of(cls, row) -> WebhookDeliveryOut:
        out = cls.model_validate(row, from_attributes=True)
        if out.status != "pending":
            out.next_attempt_at = None
        return out


class WebhookEndpointOut(BaseModel):
    object: Literal["webhook.endpoint"] = "webhook.endpoint"
    url: str = Field(description="Every job event of the tenant is POSTed here too (as well as to a job's own webhook).")
    events: list[str] | None = Field(description="The events sent there; all of them when null.")
    created_at: datetime
    updated_at: datetime


class WebhookSecretOut(BaseModel):
    object: Literal["webhook.secret"] = "webhook.secret"
    secret: str = Field(description="whsec_…: verify the webhook-signature header with it (Standard Webhooks).")
    created_at: datetime


class FileLink(BaseModel):
    path: str
    url: str


class CheckpointOut(BaseModel):
    id: str
    object: Literal["job.checkpoint"] = "job.checkpoint"
    step: int
    metrics: dict[str, Any] | None
    created_at: datetime
    files: list[FileLink] = Field(description="Every file of the diffusers folder, with a download URL.")


class ReportOut(BaseModel):
    object: Literal["job.report"] = "job.report"
    name: str
    url: str


class SampleOut(BaseModel):
    id: str
    object: Literal["job.sample"] = "job.sample"
    step: int
    created_at: datetime
    url: str
