"""``Client``: the entry point of the Python client."""

from __future__ import annotations

import os
from typing import Any

import httpx

from difftune_client._http import DEFAULT_BASE_URL, Core
from difftune_client.errors import ConfigurationError
from difftune_client.resources import ApiKeys, BaseModels, Datasets, Jobs, Webhooks

VERSION = "0.1.0"


class Client:
    """A typed client of the difftune REST API.

    >>> client = Client()                      # DIFFTUNE_BASE_URL, DIFFTUNE_API_KEY
    >>> ds = client.datasets.upload("data/")   # a folder is zipped on the fly
    >>> job = client.jobs.create(base_model="bm_…", dataset=ds, hyperparameters={"max_steps": 2000})
    >>> for event in client.jobs.events(job.id, stream=True): print(event.message)
    >>> client.jobs.checkpoints.download(job.id, dest_dir="out/")   # the latest checkpoint

    ``base_url`` defaults to ``$DIFFTUNE_BASE_URL`` (else ``http://127.0.0.1:8000``) and ``api_key``
    to ``$DIFFTUNE_API_KEY``. ``http`` is the ``httpx.Client`` the API is reached through (tests pass
    FastAPI's TestClient; its own base URL is then used unless ``base_url`` is given); links to other
    hosts (presigned S3 URLs) are fetched with ``download_http``, a plain client by default, which never
    carries the API key. Requests that are safe to repeat are retried up to ``max_retries`` times
    (429 and 503 after their ``Retry-After``, at most ``max_retry_wait`` seconds).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = 60.0,
        max_retries: int = 3,
        max_retry_wait: float = 60.0,
        http: httpx.Client | None = None,
        download_http: httpx.Client | None = None,
    ):
        api_key = api_key or os.environ.get("DIFFTUNE_API_KEY")
        if not api_key:
            raise ConfigurationError("no API key: set DIFFTUNE_API_KEY (or pass api_key=…)")
        if base_url is None:
            own = str(http.base_url) if http is not None else ""
            base_url = own or os.environ.get("DIFFTUNE_BASE_URL") or DEFAULT_BASE_URL
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"the base URL must start with http:// or https:// (got {base_url!r}); "
                                     "set DIFFTUNE_BASE_URL")
        self._core = Core(base_url, api_key, timeout=timeout, max_retries=max_retries,
                          max_retry_wait=max_retry_wait, http=http, download_http=download_http,
                          user_agent=f"difftune-client/{VERSION}")
        self.datasets = Datasets(self._core)
        self.base_models = BaseModels(self._core)
        self.jobs = Jobs(self._core)
        self.api_keys = ApiKeys(self._core)
        self.webhooks = Webhooks(self._core)

    @property
    def base_url(self) -> str:
        return self._core.base_url

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: the API process is up."""
        return self._core.json("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        """``GET /readyz``: database, broker and storage reachable (an ``Unavailable`` error names what is not)."""
        return self._core.json("GET", "/readyz", retries=0)

    def close(self) -> None:
        """Close the HTTP clients this client made (not one passed as ``http``)."""
        self._core.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
