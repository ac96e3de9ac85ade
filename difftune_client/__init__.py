"""A typed Python client of the difftune REST API (httpx + pydantic; no torch, no server packages).

    from difftune_client import Client
    client = Client()   # DIFFTUNE_BASE_URL (default http://127.0.0.1:8000), DIFFTUNE_API_KEY
    dataset = client.datasets.upload("data/", progress=lambda sent, total: ...)
    job = client.jobs.create(base_model="bm_…", dataset=dataset, hyperparameters={"max_steps": 2000})
    job = client.jobs.wait(job.id)
    client.jobs.checkpoints.download(job.id, dest_dir="out/checkpoint")  # the latest one
"""

from difftune_client._http import Paginated
from difftune_client._sse import EventStream
from difftune_client.client import VERSION, Client
from difftune_client.errors import (
    ApiConnectionError,
    ApiError,
    BadRequest,
    ConfigurationError,
    Conflict,
    DifftuneError,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from difftune_client.types import (
    JOB_FINISHED,
    JOB_STATUSES,
    ApiKey,
    ApiKeyCreated,
    BaseModelInfo,
    Checkpoint,
    Dataset,
    DatasetBuckets,
    Event,
    FileLink,
    Job,
    JobMetrics,
    Report,
    Sample,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)

__version__ = VERSION
__all__ = [
    "JOB_FINISHED", "JOB_STATUSES", "ApiConnectionError", "ApiError", "ApiKey", "ApiKeyCreated", "BadRequest",
    "BaseModelInfo", "Checkpoint", "Client", "ConfigurationError", "Conflict", "Dataset", "DatasetBuckets",
    "DifftuneError", "Event", "EventStream", "FileLink", "Forbidden", "Invalid", "Job", "JobMetrics", "NotFound",
    "Paginated", "RateLimited", "Report", "Sample", "ServerError", "TooLarge", "Unauthorized", "Unavailable",
    "WaitTimeout", "WebhookDelivery", "WebhookEndpoint", "WebhookSecret",
]
