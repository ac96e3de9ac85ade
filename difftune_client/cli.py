"""``difftune datasets | base-models | jobs``: the REST API from a terminal, over :mod:`difftune_client`.

Mounted on the ``difftune`` console script by :mod:`cli.main` when httpx is installed (the ``client``
or ``service`` extra). The service is ``$DIFFTUNE_BASE_URL`` (or ``--base-url`` after the group name)
and the key ``$DIFFTUNE_API_KEY`` (never an option: it would show in process lists and shell history).
Human output by default, ``--json`` for scripts; an error is one line ``error: …`` and exit code 1.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from difftune_client.client import Client
from difftune_client.errors import DifftuneError
from difftune_client.types import JOB_STATUSES, BaseModelInfo, Checkpoint, Dataset, Event, Job

F = TypeVar("F", bound=Callable[..., Any])
_options: dict[str, Any] = {"base_url": None}


def client_factory(base_url: str | None) -> Client:
    """The client every command uses (tests replace it with one on the app's TestClient)."""
    return Client(base_url)


class UsageError(DifftuneError):
    """A bad option value, reported like an API error."""


def _client() -> Client:
    return client_factory(_options["base_url"])


def _out() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def handled(fn: F) -> F:
    """Report expected failures as one ``error: …`` line and exit code 1 (130 on Ctrl-C), no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (DifftuneError, OSError, yaml.YAMLError, ValidationError) as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _connection(
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="The service (default $DIFFTUNE_BASE_URL, else http://127.0.0.1:8000). "
        "The API key is read from $DIFFTUNE_API_KEY.")] = None,
) -> None:
    _options["base_url"] = base_url


def _group(help: str) -> typer.Typer:
    group = typer.Typer(help=help, no_args_is_help=True, add_completion=False)
    group.callback()(_connection)
    return group


datasets_app = _group("Datasets of the service: upload (a folder, zip or tar), list, get, buckets, delete.")
base_models_app = _group("Base models of the service: register, upload, list, get.")
jobs_app = _group("Tuning jobs of the service: create, list, get, cancel, logs, wait, download.")

JsonOption = Annotated[bool, typer.Option("--json", help="Machine output: the API's JSON.")]


# --- output -----------------------------------------------------------------------------------------


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(_dump(value), indent=2, ensure_ascii=False))


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _step(job: Job) -> str:
    total = job.progress.total_steps
    return f"{job.progress.step}/{total}" if total else str(job.progress.step)


def _details(rows: Iterable[tuple[str, Any]]) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in rows:
        if value not in (None, "", {}, []):
            table.add_row(name, value if isinstance(value, str) else json.dumps(value, default=str))
    _out().print(table)


def _table(columns: list[str], rows: Iterable[list[str]]) -> None:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    _out().print(table)


def _show_dataset(ds: Dataset) -> None:
    _details([("id", ds.id), ("name", ds.name), ("layout", ds.layout), ("images", str(ds.num_images)),
              ("classes", ", ".join(ds.classes or [])), ("size", _size(ds.size_bytes)),
              ("created", _when(ds.created_at))])


def _show_base_model(model: BaseModelInfo) -> None:
    _details([("id", model.id), ("name", model.name), ("family", model.family), ("status", model.status),
              ("error", model.error), ("location", model.location),
              ("resolutions", model.resolutions.model_dump() if model.resolutions else None),
              ("created", _when(model.created_at))])


def _show_job(job: Job) -> None:
    eta = job.progress.eta_seconds
    _details([("id", job.id), ("kind", job.kind), ("status", job.status), ("method", job.method),
              ("base model", job.base_model), ("dataset", job.dataset),
              ("progress", _step(job) + (f"  eta {eta:.0f} s" if eta else "")), ("metrics", job.metrics),
              ("error", job.error), ("attempts", str(job.attempts)), ("created", _when(job.created_at)),
              ("started", _when(job.started_at) if job.started_at else None),
              ("finished", _when(job.finished_at) if job.finished_at else None)])


def _event_line(event: Event) -> str:
    level = "" if event.level == "info" else f" {event.level.upper()}"
    return f"{_when(event.created_at)} [{event.type}]{level} {event.message}"


# --- progress bars ------------------------------------------------------------------------------------


def _transfer_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=_err(), transient=True)


def _upload(send: Callable[[Callable[[int, int], None]], Any], label: str) -> Any:
    with _transfer_bar() as bar:
        task = bar.add_task(label, total=None)
        return send(lambda sent, total: bar.update(task, completed=sent, total=total))


def _download_progress(bar: Progress) -> Callable[[str, int, int | None], None]:
    tasks: dict[str, TaskID] = {}

    def progress(path: str, done: int, total: int | None) -> None:
        if path not in tasks:
            tasks[path] = bar.add_task(path, total=total)
        bar.update(tasks[path], completed=done, total=total)

    return progress


# --- datasets ---------------------------------------------------------------------------------------


@datasets_app.command("upload")
@handled
def datasets_upload(
    path: Annotated[Path, typer.Argument(help="A folder (zipped on the fly), or a zip or tar.")],
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the file's name).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Upload a dataset: class folders (cat/001.png) or images + metadata.jsonl."""
    client = _client()
    dataset = _upload(lambda progress: client.datasets.upload(path, name=name, progress=progress),
                      f"upload {path.name}")
    print_json(dataset) if as_json else _show_dataset(dataset)


@datasets_app.command("list")
@handled
def datasets_list(
    limit: Annotated[int, typer.Option(help="Most datasets shown.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List datasets, newest first."""
    items = _take(_client().datasets.list(limit=min(limit, 100)), limit)
    if as_json:
        return print_json(items)
    _table(["ID", "NAME", "LAYOUT", "IMAGES", "CLASSES", "CREATED"],
           [[d.id, d.name, d.layout, str(d.num_images), str(d.num_classes or "-"), _when(d.created_at)]
            for d in items])


@datasets_app.command("get")
@handled
def datasets_get(dataset_id: str, as_json: JsonOption = False) -> None:
    """Show a dataset."""
    dataset = _client().datasets.get(dataset_id)
    print_json(dataset) if as_json else _show_dataset(dataset)


@datasets_app.command("buckets")
@handled
def datasets_buckets(
    dataset_id: str,
    resolution: Annotated[int, typer.Option(help="Training resolution.")] = 1024,
    bucket_step: Annotated[int, typer.Option(help="Bucket sides are multiples of this.")] = 64,
    max_aspect: Annotated[float, typer.Option(help="Largest aspect ratio.")] = 2.0,
    as_json: JsonOption = False,
) -> None:
    """How aspect_buckets: true would group the dataset's images."""
    buckets = _client().datasets.buckets(dataset_id, resolution=resolution, bucket_step=bucket_step,
                                         bucket_max_aspect=max_aspect)
    if as_json:
        return print_json(buckets)
    _table(["BUCKET", "IMAGES"], [[size, str(count)] for size, count in buckets.histogram.items()])
    typer.echo(f"smaller than their bucket: {buckets.smaller_than_bucket}")


@datasets_app.command("delete")
@handled
def datasets_delete(dataset_id: str) -> None:
    """Delete a dataset and its files."""
    _client().datasets.delete(dataset_id)
    typer.echo(f"deleted {dataset_id}")


# --- base models ------------------------------------------------------------------------------------


def parse_location(text: str) -> dict[str, Any]:
    """``hub:org/name[@revision]``, ``checkpoint:job_…[@step]``, ``local:/abs/dir`` (or ``/abs/dir``),
    ``s3://bucket/prefix`` or a JSON object."""
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError as err:
            raise UsageError(f"--location: not a JSON object ({err})") from None
    kind, _, rest = text.partition(":")
    if kind == "s3":
        return {"kind": "s3", "uri": text}
    if text.startswith("/"):
        return {"kind": "local", "path": text}
    if kind == "local" and rest:
        return {"kind": "local", "path": rest}
    if kind == "hub" and rest:
        repo, _, revision = rest.partition("@")
        return {"kind": "hub", "repo_id": repo, **({"revision": revision} if revision else {})}
    if kind == "checkpoint" and rest:
        job, _, step = rest.partition("@")
        if step and not step.isdigit():
            raise UsageError(f"--location: the checkpoint step must be a number (got {step!r})")
        return {"kind": "checkpoint", "job_id": job, **({"step": int(step)} if step else {})}
    raise UsageError(f"--location: expected hub:ORG/NAME[@REV], checkpoint:JOB[@STEP], local:/DIR or "
                     f"s3://BUCKET/PREFIX (got {text!r})")


def _wait_for_model(client: Client, model: BaseModelInfo) -> BaseModelInfo:
    with _err().status(f"{model.id}: waiting for the load check") as status:
        model = client.base_models.wait_ready(
            model.id, on_update=lambda m: status.update(f"{m.id}: {m.status}"))
    if model.status == "failed":
        raise DifftuneError(f"base model {model.id} failed its load check: {model.error}")
    return model


@base_models_app.command("create")
@handled
def base_models_create(
    name: Annotated[str, typer.Option(help="A name for the model.")],
    family: Annotated[str, typer.Option(help="dit, sd, sd-controlnet, sdxl, sdxl-controlnet, sd3 or flux.")],
    location: Annotated[str, typer.Option(help="hub:ORG/NAME[@REV], checkpoint:JOB[@STEP], local:/DIR or "
                                                "s3://BUCKET/PREFIX.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the load check.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Register a diffusers-format base model."""
    client = _client()
    model = client.base_models.create(name, family, parse_location(location))
    model = _wait_for_model(client, model) if wait else model
    print_json(model) if as_json else _show_base_model(model)


@base_models_app.command("upload")
@handled
def base_models_upload(
    path: Annotated[Path, typer.Argument(help="A diffusers folder (zipped on the fly), or a zip or tar of one.")],
    name: Annotated[str, typer.Option(help="A name for the model.")],
    family: Annotated[str, typer.Option(help="Model family.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the load check.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Upload a base model (for services without shared storage)."""
    client = _client()
    model = _upload(lambda progress: client.base_models.upload(path, name=name, family=family, progress=progress),
                    f"upload {path.name}")
    model = _wait_for_model(client, model) if wait else model
    print_json(model) if as_json else _show_base_model(model)


@base_models_app.command("list")
@handled
def base_models_list(
    limit: Annotated[int, typer.Option(help="Most models shown.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List base models, newest first."""
    items = _take(_client().base_models.list(limit=min(limit, 100)), limit)
    if as_json:
        return print_json(items)
    _table(["ID", "NAME", "FAMILY", "STATUS", "CREATED"],
           [[m.id, m.name, m.family, m.status, _when(m.created_at)] for m in items])


@base_models_app.command("get")
@handled
def base_models_get(base_model_id: str, as_json: JsonOption = False) -> None:
    """Show a base model."""
    model = _client().base_models.get(base_model_id)
    print_json(model) if as_json else _show_base_model(model)


# --- jobs -------------------------------------------------------------------------------------------


def _value(raw: str) -> Any:
    """A --set value: JSON when it parses (numbers, true/false, null, lists), else the string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["max_steps=2000", "bank.size=512"]`` → ``{"max_steps": 2000, "bank": {"size": 512}}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise UsageError(f"--set expects KEY=VALUE (got {item!r})")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise UsageError(f"--set {item!r}: {part} is not a mapping")
        target[parts[-1]] = _value(raw.strip())
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def _config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a config is a YAML mapping of TrainConfig fields")
    dropped = [key for key in ("base_model", "family") if key in data]
    if dropped:
        typer.echo(f"note: {path.name}: {' and '.join(dropped)} ignored (the registered base model sets them)",
                   err=True)
    return {k: v for k, v in data.items() if k not in dropped}


def _follow_status(client: Client, job_id: str, poll: float, timeout: float | None) -> Job:
    with _err().status(f"{job_id}: waiting") as status:
        def update(job: Job) -> None:
            eta = f"  eta {job.progress.eta_seconds:.0f} s" if job.progress.eta_seconds else ""
            status.update(f"{job.id}: {job.status}  step {_step(job)}{eta}")

        return client.jobs.wait(job_id, poll=poll, timeout=timeout, on_update=update)


def _finish(job: Job, as_json: bool) -> None:
    """Print a finished job; exit 1 unless it succeeded."""
    if as_json:
        print_json(job)
    else:
        typer.echo(f"{job.id} {job.status}  step {_step(job)}" + (f"  metrics {json.dumps(job.metrics)}"
                                                                   if job.metrics else ""))
    if job.status != "succeeded":
        raise DifftuneError(f"job {job.id} {job.status}" + (f": {job.error}" if job.error else ""))


@jobs_app.command("create")
@handled
def jobs_create(
    base_model: Annotated[str, typer.Option(help="Base model id (bm_…).")],
    dataset: Annotated[str, typer.Option(help="Dataset id (ds_…).")],
    method: Annotated[str | None, typer.Option(help="difftune (default) or standard.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML of TrainConfig fields (the library's config).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="A hyperparameter KEY=VALUE (JSON values; dotted keys nest: bank.size=512); repeatable, "
        "over --config.")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs in all (several hosts when above a worker's "
                                                  "DIFFTUNE_WORKER_GPUS).")] = None,
    nodes: Annotated[int | None, typer.Option(help="Hosts the GPUs are spread over (default: as few as fit).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default hyperparameters.seed).")] = None,
    metadata: Annotated[list[str] | None, typer.Option(help="KEY=VALUE label stored with the job; repeatable.")] = None,
    resume_from: Annotated[str | None, typer.Option(help="A finished job whose latest checkpoint to start from.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Measure one step's memory instead of training.")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="Retry-safe key (default: a fresh one).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the job finishes (exit 1 unless it succeeds).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Start a tuning job."""
    hyperparameters = _merge(_config(config), parse_sets(set_ or []))
    labels = {}
    for item in metadata or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--metadata expects KEY=VALUE (got {item!r})")
        labels[key] = value
    client = _client()
    job = client.jobs.create(base_model, dataset, hyperparameters=hyperparameters, method=method, seed=seed,
                             metadata=labels or None, gpus=gpus, nodes=nodes, resume_from=resume_from, dry_run=dry_run,
                             idempotency_key=idempotency_key)
    if not wait:
        return print_json(job) if as_json else _show_job(job)
    typer.echo(f"{job.id} {job.status}", err=True)
    _finish(_follow_status(client, job.id, 2.0, None), as_json)


@jobs_app.command("list")
@handled
def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs of this status: " + ", ".join(JOB_STATUSES) + ".")] = None,
    limit: Annotated[int, typer.Option(help="Most jobs shown.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first."""
    items = _take(_client().jobs.list(status=status, limit=min(limit, 100)), limit)
    if as_json:
        return print_json(items)
    _table(["ID", "STATUS", "KIND", "METHOD", "STEP", "CREATED"],
           [[j.id, j.status, j.kind, j.method, _step(j), _when(j.created_at)] for j in items])


@jobs_app.command("get")
@handled
def jobs_get(job_id: str, as_json: JsonOption = False) -> None:
    """Show a job: status, progress, ETA, metrics, error."""
    job = _client().jobs.get(job_id)
    print_json(job) if as_json else _show_job(job)


@jobs_app.command("cancel")
@handled
def jobs_cancel(job_id: str, as_json: JsonOption = False) -> None:
    """Cancel a job (a running one stops between steps and keeps its last checkpoint)."""
    job = _client().jobs.cancel(job_id)
    print_json(job) if as_json else typer.echo(f"{job.id} {job.status}")


@jobs_app.command("logs")
@handled
def jobs_logs(
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream new events until the job ends.")] = False,
    as_json: JsonOption = False,
) -> None:
    """A job's events, oldest first (one JSON object a line with --json)."""
    client = _client()

    def show(event: Event) -> None:
        typer.echo(event.model_dump_json() if as_json else _event_line(event))

    if not follow:
        for event in client.jobs.events(job_id, limit=100):
            show(event)
        return
    stream = client.jobs.events(job_id, stream=True)
    with _err().status(f"{job_id}: following") as status:
        for event in stream:
            show(event)  # on a terminal the status line stays below the printed events
            step = (event.data or {}).get("step")
            status.update(f"{job_id}: {event.type}" + (f"  step {step}" if step is not None else ""))
    if not as_json:
        typer.echo(f"-- {job_id} {stream.status}")


@jobs_app.command("wait")
@handled
def jobs_wait(
    job_id: str,
    poll: Annotated[float, typer.Option(help="Seconds between polls.")] = 2.0,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Wait until a job finishes; exit 0 when it succeeded, 1 otherwise."""
    _finish(_follow_status(_client(), job_id, poll, timeout), as_json)


@jobs_app.command("checkpoints")
@handled
def jobs_checkpoints(job_id: str, as_json: JsonOption = False) -> None:
    """A job's checkpoints."""
    items: list[Checkpoint] = _client().jobs.checkpoints.list(job_id, limit=100).to_list()
    if as_json:
        return print_json(items)
    _table(["STEP", "FILES", "METRICS", "CREATED"],
           [[str(c.step), str(len(c.files)), json.dumps(c.metrics or {}), _when(c.created_at)] for c in items])


@jobs_app.command("download")
@handled
def jobs_download(
    job_id: str,
    out: Annotated[Path, typer.Option("--out", help="Folder the checkpoint's files go to (a diffusers folder).")],
    step: Annotated[int | None, typer.Option(help="Checkpoint step (default: the latest).")] = None,
) -> None:
    """Download a checkpoint (every file of its diffusers folder, each renamed into place when complete)."""
    client = _client()
    checkpoint = client.jobs.checkpoints.get(job_id, step)
    with _transfer_bar() as bar:
        folder = client.jobs.checkpoints.download(job_id, checkpoint.step, out, progress=_download_progress(bar))
    typer.echo(f"checkpoint step {checkpoint.step}: {len(checkpoint.files)} files in {folder}")


def _take(items: Iterable[Any], limit: int) -> list[Any]:
    out = []
    for item in items:
        if len(out) >= limit:
            break
        out.append(item)
    return out


def register(app: typer.Typer) -> None:
    """Mount ``datasets``, ``base-models`` and ``jobs`` on the ``difftune`` app."""
    app.add_typer(datasets_app, name="datasets")
    app.add_typer(base_models_app, name="base-models")
    app.add_typer(jobs_app, name="jobs")
