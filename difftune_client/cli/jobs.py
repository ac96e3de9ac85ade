"""``difftune jobs create | list | get | cancel | logs | wait``, and what the other job commands share:
showing a job, waiting for one, finishing with its status as the exit code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from difftune_client.cli._common import (
    JsonOption,
    UsageError,
    client,
    details,
    err,
    group,
    handled,
    parse_labels,
    print_json,
    table,
    take,
    when,
)
from difftune_client.client import Client
from difftune_client.errors import DifftuneError
from difftune_client.types import JOB_STATUSES, Event, Job

jobs_app = group("Tuning jobs of the service: create, list, get, cancel, logs, wait; their checkpoints, samples, "
                 "reports, metrics, webhook deliveries and forgetting probes.")

WEBHOOK_EVENTS = ("job.running", "job.succeeded", "job.failed", "job.cancelled", "job.checkpoint", "job.sample")


# --- shown and awaited by every job command --------------------------------------------------------


def job_step(job: Job) -> str:
    total = job.progress.total_steps
    return f"{job.progress.step}/{total}" if total else str(job.progress.step)


def job_rows(job: Job) -> list[tuple[str, Any]]:
    eta = job.progress.eta_seconds
    return [("id", job.id), ("kind", job.kind), ("status", job.status), ("method", job.method),
            ("base model", job.base_model), ("dataset", job.dataset),
            ("progress", job_step(job) + (f"  eta {eta:.0f} s" if eta else "")), ("metrics", job.metrics),
            ("error", job.error), ("attempts", str(job.attempts)), ("created", when(job.created_at)),
            ("started", when(job.started_at) if job.started_at else None),
            ("finished", when(job.finished_at) if job.finished_at else None)]


def show_job(job: Job) -> None:
    details(job_rows(job))


def follow_status(api: Client, job_id: str, poll: float, timeout: float | None) -> Job:
    """Wait for the job to finish, a live status line on stderr."""
    with err().status(f"{job_id}: waiting") as status:
        def update(job: Job) -> None:
            eta = f"  eta {job.progress.eta_seconds:.0f} s" if job.progress.eta_seconds else ""
            status.update(f"{job.id}: {job.status}  step {job_step(job)}{eta}")

        return api.jobs.wait(job_id, poll=poll, timeout=timeout, on_update=update)


def finish(job: Job, as_json: bool) -> None:
    """Print a finished job; exit 1 unless it succeeded."""
    if as_json:
        print_json(job)
    else:
        typer.echo(f"{job.id} {job.status}  step {job_step(job)}" + (f"  metrics {json.dumps(job.metrics)}"
                                                                      if job.metrics else ""))
    if job.status != "succeeded":
        raise DifftuneError(f"job {job.id} {job.status}" + (f": {job.error}" if job.error else ""))


def created(api: Client, job: Job, wait: bool, as_json: bool, show: Callable[[Job], None] = show_job) -> None:
    """Print a job just created (with ``show``), or wait for it (``--wait``) and finish with its status."""
    if not wait:
        return print_json(job) if as_json else show(job)
    typer.echo(f"{job.id} {job.status}", err=True)
    finish(follow_status(api, job.id, 2.0, None), as_json)


MetadataOption = Annotated[list[str] | None, typer.Option(help="KEY=VALUE label stored with the job; repeatable.")]
IdempotencyOption = Annotated[str | None, typer.Option(help="Retry-safe key (default: a fresh one).")]
WaitOption = Annotated[bool, typer.Option("--wait", help="Wait until the job finishes (exit 1 unless it succeeds).")]


# --- hyperparameters -------------------------------------------------------------------------------


def _value(raw: str) -> Any:
    """A --set value: JSON when it parses (numbers, true/false, null, lists), else the string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["max_steps=2000", "bank.size=512"]`` → ``{"max_steps": 2000, "bank": {"size": 512}}``."""
    found: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise UsageError(f"--set expects KEY=VALUE (got {item!r})")
        target = found
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise UsageError(f"--set {item!r}: {part} is not a mapping")
        target[parts[-1]] = _value(raw.strip())
    return found


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


def _webhook(url: str | None, events: list[str] | None) -> dict[str, Any] | None:
    if url is None:
        if events:
            raise UsageError("--webhook-event needs --webhook URL")
        return None
    return {"url": url, **({"events": events} if events else {})}


# --- commands --------------------------------------------------------------------------------------


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
    metadata: MetadataOption = None,
    validation_prompt: Annotated[list[str] | None, typer.Option(
        help="A prompt of the sample grids (text-conditioned families); repeatable.")] = None,
    validation_label: Annotated[list[int] | None, typer.Option(
        help="A class of the sample grids (class-conditioned families); repeatable.")] = None,
    webhook: Annotated[str | None, typer.Option(
        help="URL the job's events are POSTed to, signed with the tenant's secret (difftune webhooks secret).")] = None,
    webhook_event: Annotated[list[str] | None, typer.Option(
        help="Only this event (" + ", ".join(WEBHOOK_EVENTS) + "); repeatable; default all.")] = None,
    resume_from: Annotated[str | None, typer.Option(help="A finished job whose latest checkpoint to start from.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Measure one step's memory instead of training.")] = False,
    idempotency_key: IdempotencyOption = None,
    wait: WaitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Start a tuning job."""
    hyperparameters = _merge(_config(config), parse_sets(set_ or []))
    labels = parse_labels(metadata)
    hook = _webhook(webhook, webhook_event)
    api = client()
    job = api.jobs.create(base_model, dataset, hyperparameters=hyperparameters, method=method, seed=seed,
                          metadata=labels or None, validation_prompts=validation_prompt or None,
                          validation_labels=validation_label or None, gpus=gpus, nodes=nodes,
                          resume_from=resume_from, dry_run=dry_run, webhook=hook, idempotency_key=idempotency_key)
    created(api, job, wait, as_json)


@jobs_app.command("list")
@handled
def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs of this status: " + ", ".join(JOB_STATUSES) + ".")] = None,
    limit: Annotated[int, typer.Option(help="Most jobs shown.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first."""
    items = take(client().jobs.list(status=status, limit=min(limit, 100)), limit)
    if as_json:
        return print_json(items)
    table(["ID", "STATUS", "KIND", "METHOD", "STEP", "CREATED"],
          [[j.id, j.status, j.kind, j.method, job_step(j), when(j.created_at)] for j in items])


@jobs_app.command("get")
@handled
def jobs_get(job_id: str, as_json: JsonOption = False) -> None:
    """Show a job: status, progress, ETA, metrics, error."""
    job = client().jobs.get(job_id)
    print_json(job) if as_json else show_job(job)


@jobs_app.command("cancel")
@handled
def jobs_cancel(job_id: str, as_json: JsonOption = False) -> None:
    """Cancel a job (a running one stops between steps and keeps its last checkpoint)."""
    job = client().jobs.cancel(job_id)
    print_json(job) if as_json else typer.echo(f"{job.id} {job.status}")


def _event_line(event: Event) -> str:
    level = "" if event.level == "info" else f" {event.level.upper()}"
    return f"{when(event.created_at)} [{event.type}]{level} {event.message}"


@jobs_app.command("logs")
@handled
def jobs_logs(
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream new events until the job ends.")] = False,
    as_json: JsonOption = False,
) -> None:
    """A job's events, oldest first (one JSON object a line with --json)."""
    api = client()

    def show(event: Event) -> None:
        typer.echo(event.model_dump_json() if as_json else _event_line(event))

    if not follow:
        for event in api.jobs.events(job_id, limit=100):
            show(event)
        return
    stream = api.jobs.events(job_id, stream=True)
    with err().status(f"{job_id}: following") as status:
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
    finish(follow_status(client(), job_id, poll, timeout), as_json)
