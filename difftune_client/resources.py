"""The resource namespaces of :class:`difftune_client.Client`: datasets, base models, jobs (with their
checkpoints, samples, reports and forgetting probes), API keys and webhooks."""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Literal, overload

from difftune_client._http import Core, DownloadProgress, Paginated, UploadProgress
from difftune_client._sse import EventStream
from difftune_client.errors import DifftuneError, Forbidden, NotFound, WaitTimeout
from difftune_client.types import (
    ApiKey,
    ApiKeyCreated,
    BaseModelInfo,
    Checkpoint,
    Dataset,
    DatasetBuckets,
    Event,
    Job,
    JobMetrics,
    Report,
    Sample,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)

COMPRESSIBLE = {".json", ".jsonl", ".txt", ".csv", ".yaml", ".yml", ".md"}
CONTENT_TYPES = {".zip": "application/zip", ".tar": "application/x-tar", ".gz": "application/gzip",
                 ".tgz": "application/gzip", ".bz2": "application/x-bzip2", ".xz": "application/x-xz"}


def _id(value: Any) -> str:
    """An id, or the ``id`` of an object (``jobs.create(base_model=model, dataset=ds)``)."""
    return value if isinstance(value, str) else value.id


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key or f"difftune-client-{uuid.uuid4()}"}


def zip_folder(folder: Path, out: Path) -> Path:
    """Zip ``folder``'s files (hidden ones skipped) into ``out``, paths relative to ``folder``; images
    are stored as they are (already compressed), text files deflated."""
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise FileNotFoundError(f"{folder} holds no files to upload")
    with zipfile.ZipFile(out, "w") as archive:
        for path in files:
            method = zipfile.ZIP_DEFLATED if path.suffix.lower() in COMPRESSIBLE else zipfile.ZIP_STORED
            archive.write(path, path.relative_to(folder).as_posix(), compress_type=method)
    return out


@contextlib.contextmanager
def _archive(path: str | Path) -> Iterator[tuple[Path, str, str]]:
    """(file to send, its upload name, content type) of an archive, or of a folder zipped into a
    temporary file that is removed afterwards."""
    path = Path(path).expanduser()
    if path.is_dir():
        with tempfile.TemporaryDirectory(prefix="difftune-upload-") as tmp:
            name = f"{path.resolve().name or 'data'}.zip"
            yield zip_folder(path, Path(tmp) / name), name, "application/zip"
        return
    if not path.is_file():
        raise FileNotFoundError(f"no such file or folder: {path}")
    yield path, path.name, CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def _wait(fetch: Callable[[], Any], done: Callable[[Any], bool], *, what: str, poll: float,
          timeout: float | None, on_update: Callable[[Any], None] | None, sleep: Callable[[float], None]) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        item = fetch()
        if on_update:
            on_update(item)
        if done(item):
            return item
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(f"{what} is still {item.status} after {timeout:g} s")
        sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))


class _Resource:
    def __init__(self, core: Core):
        self._core = core


# --- datasets --------------------------------------------------------------------------------------


class Datasets(_Resource):
    """``/v1/datasets``."""

    def upload(self, path: str | Path, *, name: str | None = None, progress: UploadProgress | None = None,
               idempotency_key: str | None = None) -> Dataset:
        """Upload a zip or tar, or a folder (zipped on the fly into a temporary file, hidden files left
        out, named after the folder): class folders (``cat/001.png``) or images + ``metadata.jsonl``.
        The body is streamed; ``progress(sent, total)`` is called as the archive's bytes go out. A
        retried upload is safe (``Idempotency-Key``)."""
        if name is None and Path(path).expanduser().is_dir():
            name = Path(path).expanduser().resolve().name
        with _archive(path) as (file, filename, content_type):
            body = self._core.multipart({"name": name}, file, filename, content_type, progress)
            return Dataset.model_validate(self._core.json(
                "POST", "/v1/datasets", body=body, headers=_idempotency(idempotency_key)))

    def list(self, *, limit: int | None = None) -> Paginated[Dataset]:
        """Every dataset, newest first (``limit``: page size)."""
        return self._core.pages("/v1/datasets", Dataset, {"limit": limit})

    def get(self, dataset_id: str) -> Dataset:
        return Dataset.model_validate(self._core.json("GET", f"/v1/datasets/{_id(dataset_id)}"))

    def delete(self, dataset_id: str) -> None:
        """Delete a dataset and its files (409 while an unfinished job uses it)."""
        self._core.send("DELETE", f"/v1/datasets/{_id(dataset_id)}")

    def buckets(self, dataset_id: str, *, resolution: int | None = None, bucket_step: int | None = None,
                bucket_max_aspect: float | None = None) -> DatasetBuckets:
        """How ``aspect_buckets: true`` would group the dataset's images at these settings."""
        params = {"resolution": resolution, "bucket_step": bucket_step, "bucket_max_aspect": bucket_max_aspect}
        return DatasetBuckets.model_validate(
            self._core.json("GET", f"/v1/datasets/{_id(dataset_id)}/buckets", params=params))


# --- base models -----------------------------------------------------------------------------------


class BaseModels(_Resource):
    """``/v1/base-models``."""

    def create(self, name: str, family: str, location: dict[str, Any], *,
               idempotency_key: str | None = None) -> BaseModelInfo:
        """Register a diffusers-format base model. ``location``: ``{"kind": "hub", "repo_id": …}``,
        ``{"kind": "checkpoint", "job_id": …, "step": …}``, ``{"kind": "local", "path": …}`` or
        ``{"kind": "s3", "uri": …}``. Its ``status`` is ``pending`` until a worker has loaded it
        (:meth:`wait_ready`)."""
        body = {"name": name, "family": family, "location": location}
        return BaseModelInfo.model_validate(self._core.json(
            "POST", "/v1/base-models", json=body, headers=_idempotency(idempotency_key)))

    def upload(self, path: str | Path, *, name: str, family: str, progress: UploadProgress | None = None,
               idempotency_key: str | None = None) -> BaseModelInfo:
        """Upload a diffusers folder (zipped on the fly) or a zip/tar of one."""
        with _archive(path) as (file, filename, content_type):
            body = self._core.multipart({"name": name, "family": family}, file, filename, content_type, progress)
            return BaseModelInfo.model_validate(self._core.json(
                "POST", "/v1/base-models/upload", body=body, headers=_idempotency(idempotency_key)))

    def list(self, *, limit: int | None = None) -> Paginated[BaseModelInfo]:
        return self._core.pages("/v1/base-models", BaseModelInfo, {"limit": limit})

    def get(self, base_model_id: str) -> BaseModelInfo:
        return BaseModelInfo.model_validate(self._core.json("GET", f"/v1/base-models/{_id(base_model_id)}"))

    def wait_ready(self, base_model_id: str, *, poll: float = 2.0, timeout: float | None = None,
                   on_update: Callable[[BaseModelInfo], None] | None = None) -> BaseModelInfo:
        """Poll until the load check is done; the model's ``status`` is then ``ready`` or ``failed``
        (with ``error``). Raises :class:`WaitTimeout` after ``timeout`` seconds."""
        return _wait(lambda: self.get(base_model_id), lambda m: m.status != "pending",
                     what=f"base model {_id(base_model_id)}", poll=poll, timeout=timeout, on_update=on_update,
                     sleep=self._core.sleep)


# --- jobs ------------------------------------------------------------------------------------------


class Checkpoints(_Resource):
    """``/v1/jobs/{id}/checkpoints``: diffusers folders, each file with a download URL."""

    def list(self, job_id: str, *, limit: int | None = None) -> Paginated[Checkpoint]:
        return self._core.pages(f"/v1/jobs/{_id(job_id)}/checkpoints", Checkpoint, {"limit": limit})

    def get(self, job_id: str, step: int | None = None) -> Checkpoint:
        """The checkpoint at ``step``, or the latest one."""
        checkpoints = self.list(job_id, limit=100).to_list()
        if not checkpoints:
            raise NotFound(404, "Not found", f"job {_id(job_id)} has no checkpoint yet")
        if step is None:
            return max(checkpoints, key=lambda c: c.step)
        for checkpoint in checkpoints:
            if checkpoint.step == step:
                return checkpoint
        steps = ", ".join(str(c.step) for c in sorted(checkpoints, key=lambda c: c.step))
        raise NotFound(404, "Not found", f"job {_id(job_id)} has no checkpoint at step {step}",
                       errors=[{"field": "step", "message": f"one of {steps}"}])

    def download(self, job_id: str, step: int | None = None, dest_dir: str | Path | None = None, *,
                 progress: DownloadProgress | None = None) -> Path:
        """Download every file of a checkpoint (the latest unless ``step``) into ``dest_dir`` (default
        ``JOB_ID/step_0000400``), which becomes the diffusers folder (``from_pretrained(dest_dir)``).
        Each file is streamed to a hidden temporary name, then renamed; ``progress(path, received,
        total)`` as its bytes arrive. Returns the folder."""
        checkpoint = self.get(job_id, step)
        dest = Path(dest_dir or Path(_id(job_id)) / f"step_{checkpoint.step:07d}").expanduser()
        for link in checkpoint.files:
            target = _inside(dest, link.path)
            try:
                self._core.download(link.url, target, name=link.path, progress=progress)
            except Forbidden:  # the links expired during a long download: ask for fresh ones, once
                url = {f.path: f.url for f in self.get(job_id, checkpoint.step).files}.get(link.path)
                if url is None:
                    raise
                self._core.download(url, target, name=link.path, progress=progress)
        dest.mkdir(parents=True, exist_ok=True)
        return dest


class Samples(_Resource):
    """``/v1/jobs/{id}/samples``: sample grids (PNG)."""

    def list(self, job_id: str, *, limit: int | None = None) -> Paginated[Sample]:
        return self._core.pages(f"/v1/jobs/{_id(job_id)}/samples", Sample, {"limit": limit})

    def download(self, job_id: str, step: int | None = None, dest_dir: str | Path | None = None, *,
                 progress: DownloadProgress | None = None) -> Path:
        """Download the grid of ``step`` (default the latest) as ``dest_dir/step_0000100.png`` (default
        folder: ``JOB_ID``); returns the file."""
        samples = self.list(job_id, limit=100).to_list()
        chosen = [s for s in samples if step is None or s.step == step]
        if not chosen:
            raise NotFound(404, "Not found", f"job {_id(job_id)} has no sample grid"
                           + ("" if step is None else f" at step {step}"))
        sample = max(chosen, key=lambda s: s.step)
        name = f"step_{sample.step:07d}.png"
        dest = Path(dest_dir or _id(job_id)).expanduser()
        return self._core.download(sample.url, dest / name, name=name, progress=progress)


class Reports(_Resource):
    """``/v1/jobs/{id}/reports``: files an analysis job wrote (``probe.json``, ``probe.png``)."""

    def list(self, job_id: str) -> list[Report]:
        return self._core.pages(f"/v1/jobs/{_id(job_id)}/reports", Report).to_list()

    def download(self, job_id: str, dest_dir: str | Path | None = None, *,
                 progress: DownloadProgress | None = None) -> list[Path]:
        """Download every report file into ``dest_dir`` (default ``JOB_ID/reports``)."""
        dest = Path(dest_dir or Path(_id(job_id)) / "reports").expanduser()
        return [self._core.download(r.url, _inside(dest, r.name), name=r.name, progress=progress)
                for r in self.list(job_id)]


class ForgettingProbes(_Resource):
    """``POST /v1/jobs/{id}/forgetting-probes``."""

    def create(self, job_id: str, *, checkpoint_step: int | None = None, dataset: Any = None,
               points: int | None = None, samples_per_class: int | None = None,
               guidance: list[float] | None = None, sample_steps: int | None = None, seed: int | None = None,
               guidance_mode: str | None = None, metadata: dict[str, str] | None = None,
               idempotency_key: str | None = None) -> Job:
        """Start a chain-of-forgetting probe of a tuned DiT job (``guidance_mode="domain"``: Domain Guidance);
        answers the probe job."""
        body = _without_none(checkpoint_step=checkpoint_step, dataset=dataset and _id(dataset), points=points,
                             samples_per_class=samples_per_class, guidance=guidance, sample_steps=sample_steps,
                             seed=seed, guidance_mode=guidance_mode, metadata=metadata)
        return Job.model_validate(self._core.json("POST", f"/v1/jobs/{_id(job_id)}/forgetting-probes", json=body,
                                                  headers=_idempotency(idempotency_key)))


class Jobs(_Resource):
    """``/v1/jobs``."""

    def __init__(self, core: Core):
        super().__init__(core)
        self.checkpoints = Checkpoints(core)
        self.samples = Samples(core)
        self.reports = Reports(core)
        self.forgetting_probes = ForgettingProbes(core)

    def create(self, base_model: Any, dataset: Any, *, hyperparameters: dict[str, Any] | None = None,
               method: str | None = None, validation_labels: list[int] | None = None,
               validation_prompts: list[str] | None = None, seed: int | None = None,
               metadata: dict[str, str] | None = None, gpus: int | None = None, nodes: int | None = None,
               resume_from: Any = None,
               dry_run: bool = False, webhook: dict[str, Any] | None = None,
               idempotency_key: str | None = None) -> Job:
        """Start a tuning job (``base_model`` and ``dataset``: ids or objects). ``hyperparameters``
        are the library's TrainConfig fields; ``gpus`` in all and, optionally, over how many ``nodes`` (hosts).
        Sent with an ``Idempotency-Key`` (a fresh one unless
        given), so the retry after a lost answer returns the same job."""
        body = _without_none(base_model=_id(base_model), dataset=_id(dataset), method=method,
                             hyperparameters=hyperparameters or {}, validation_labels=validation_labels,
                             validation_prompts=validation_prompts, seed=seed, metadata=metadata,
                             resources=_without_none(gpus=gpus, nodes=nodes) or None,
                             resume_from=resume_from and _id(resume_from), webhook=webhook,
                             dry_run=dry_run or None)
        return Job.model_validate(self._core.json("POST", "/v1/jobs", json=body,
                                                  headers=_idempotency(idempotency_key)))

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._core.json("GET", f"/v1/jobs/{_id(job_id)}"))

    def list(self, *, status: str | None = None, limit: int | None = None) -> Paginated[Job]:
        """Every job (of ``status``), newest first, fetched a page (``limit``) at a time."""
        return self._core.pages("/v1/jobs", Job, {"status": status, "limit": limit})

    def cancel(self, job_id: str) -> Job:
        """Queued: cancelled at once; running: ``cancelling`` until the worker stops (409 when finished)."""
        return Job.model_validate(self._core.json("POST", f"/v1/jobs/{_id(job_id)}/cancel"))

    @overload
    def events(self, job_id: str, *, stream: Literal[False] = False, after: str | None = None,
               limit: int | None = None) -> Paginated[Event]: ...

    @overload
    def events(self, job_id: str, *, stream: Literal[True], after: str | None = None,
               limit: int | None = None) -> EventStream: ...

    def events(self, job_id: str, *, stream: bool = False, after: str | None = None,
               limit: int | None = None) -> Paginated[Event] | EventStream:
        """The job's log, oldest first (after the event id ``after``): every event so far, or with
        ``stream=True`` an :class:`EventStream` that yields events as they happen and stops when the
        job finishes (resuming with ``Last-Event-ID`` after a dropped connection)."""
        if stream:
            return EventStream(self._core, _id(job_id), after=after)
        return self._core.pages(f"/v1/jobs/{_id(job_id)}/events", Event, {"after": after, "limit": limit})

    def metrics(self, job_id: str, *, max_points: int | None = None, from_step: int | None = None,
                to_step: int | None = None) -> JobMetrics:
        """The job's metrics history (averaged into at most ``max_points``)."""
        params = {"max_points": max_points, "from_step": from_step, "to_step": to_step}
        return JobMetrics.model_validate(self._core.json("GET", f"/v1/jobs/{_id(job_id)}/metrics", params=params))

    def webhook_deliveries(self, job_id: str, *, limit: int | None = None) -> Paginated[WebhookDelivery]:
        return self._core.pages(f"/v1/jobs/{_id(job_id)}/webhook-deliveries", WebhookDelivery, {"limit": limit})

    def wait(self, job_id: str, *, poll: float = 2.0, timeout: float | None = None,
             on_update: Callable[[Job], None] | None = None) -> Job:
        """Poll until the job is finished and return it (check its ``status``: succeeded, failed or
        cancelled); ``on_update(job)`` after every poll. Raises :class:`WaitTimeout` after ``timeout`` s."""
        return _wait(lambda: self.get(job_id), lambda j: j.finished, what=f"job {_id(job_id)}", poll=poll,
                     timeout=timeout, on_update=on_update, sleep=self._core.sleep)


# --- API keys, webhooks ----------------------------------------------------------------------------


class ApiKeys(_Resource):
    """``/v1/api-keys``: the tenant's own keys."""

    def list(self) -> list[ApiKey]:
        return self._core.pages("/v1/api-keys", ApiKey).to_list()

    def create(self, name: str = "") -> ApiKeyCreated:
        """Another key of the tenant; its ``secret`` is shown only in this answer."""
        return ApiKeyCreated.model_validate(self._core.json("POST", "/v1/api-keys", json={"name": name}))

    def revoke(self, key_id: str) -> None:
        self._core.send("DELETE", f"/v1/api-keys/{_id(key_id)}")


class WebhookEndpoints(_Resource):
    """``/v1/webhooks/endpoint``: the tenant's endpoint, which gets every job event of the tenant."""

    def get(self) -> WebhookEndpoint:
        """The endpoint; ``NotFound`` when none is set."""
        return WebhookEndpoint.model_validate(self._core.json("GET", "/v1/webhooks/endpoint"))

    def set(self, url: str, *, events: list[str] | None = None) -> WebhookEndpoint:
        """Set (or replace) it: every event of every job of the tenant (``events``: those only) is POSTed
        there too, once when a job's own webhook is the same URL."""
        return WebhookEndpoint.model_validate(self._core.json("PUT", "/v1/webhooks/endpoint",
                                                             json=_without_none(url=url, events=events)))

    def delete(self) -> None:
        """Remove it; ``NotFound`` when none is set."""
        self._core.send("DELETE", "/v1/webhooks/endpoint")


class Webhooks(_Resource):
    """``/v1/webhooks``: the secret that signs the tenant's webhook deliveries, and the tenant's endpoint
    (``endpoint.get/set/delete``)."""

    def __init__(self, core: Core):
        super().__init__(core)
        self.endpoint = WebhookEndpoints(core)

    def secret(self) -> WebhookSecret:
        return WebhookSecret.model_validate(self._core.json("GET", "/v1/webhooks/secret"))

    def rotate_secret(self) -> WebhookSecret:
        return WebhookSecret.model_validate(self._core.json("POST", "/v1/webhooks/secret"))


def _without_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _inside(root: Path, relative: str) -> Path:
    """``root / relative`` for a path the service named, refusing one that would leave ``root``."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("..", "") for p in parts):
        raise DifftuneError(f"the service named an unsafe file path {relative!r}")
    return root.joinpath(*parts)
