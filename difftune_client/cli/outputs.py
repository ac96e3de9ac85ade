"""What a job wrote: ``difftune jobs checkpoints | download``, ``jobs samples list | download`` and
``jobs reports list | download``. Every file is streamed to a hidden temporary name, then renamed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from difftune_client.cli._common import (
    JsonOption,
    client,
    download_progress,
    handled,
    print_json,
    subgroup,
    table,
    transfer_bar,
    when,
)
from difftune_client.cli.jobs import jobs_app
from difftune_client.errors import NotFound
from difftune_client.types import Checkpoint

samples_app = subgroup("A job's sample grids (PNG, one per sampled step): list, download.")
reports_app = subgroup("Report files an analysis job (a forgetting probe) wrote: list, download.")
jobs_app.add_typer(samples_app, name="samples")
jobs_app.add_typer(reports_app, name="reports")


@jobs_app.command("checkpoints")
@handled
def jobs_checkpoints(job_id: str, as_json: JsonOption = False) -> None:
    """A job's checkpoints."""
    items: list[Checkpoint] = client().jobs.checkpoints.list(job_id, limit=100).to_list()
    if as_json:
        return print_json(items)
    table(["STEP", "FILES", "METRICS", "CREATED"],
          [[str(c.step), str(len(c.files)), json.dumps(c.metrics or {}), when(c.created_at)] for c in items])


@jobs_app.command("download")
@handled
def jobs_download(
    job_id: str,
    out: Annotated[Path, typer.Option("--out", help="Folder the checkpoint's files go to (a diffusers folder).")],
    step: Annotated[int | None, typer.Option(help="Checkpoint step (default: the latest).")] = None,
) -> None:
    """Download a checkpoint (every file of its diffusers folder, each renamed into place when complete)."""
    api = client()
    checkpoint = api.jobs.checkpoints.get(job_id, step)
    with transfer_bar() as bar:
        folder = api.jobs.checkpoints.download(job_id, checkpoint.step, out, progress=download_progress(bar))
    typer.echo(f"checkpoint step {checkpoint.step}: {len(checkpoint.files)} files in {folder}")


@samples_app.command("list")
@handled
def samples_list(job_id: str, as_json: JsonOption = False) -> None:
    """A job's sample grids, by step (--json for their download links)."""
    items = client().jobs.samples.list(job_id, limit=100).to_list()
    if as_json:
        return print_json(items)
    table(["STEP", "ID", "CREATED"], [[str(s.step), s.id, when(s.created_at)] for s in items])


@samples_app.command("download")
@handled
def samples_download(
    job_id: str,
    step: Annotated[int | None, typer.Option(help="The grid of this step (default: the latest).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder the grid goes to as step_NNNNNNN.png "
                                                           "(default: a folder named after the job).")] = None,
) -> None:
    """Download a sample grid."""
    api = client()
    with transfer_bar() as bar:
        path = api.jobs.samples.download(job_id, step, out, progress=download_progress(bar))
    typer.echo(f"sample grid: {path}")


@reports_app.command("list")
@handled
def reports_list(job_id: str, as_json: JsonOption = False) -> None:
    """A job's report files (--json for their download links)."""
    items = client().jobs.reports.list(job_id)
    if as_json:
        return print_json(items)
    table(["NAME"], [[r.name] for r in items])


@reports_app.command("download")
@handled
def reports_download(
    job_id: str,
    out: Annotated[Path | None, typer.Option("--out", help="Folder the files go to (default: JOB/reports).")] = None,
) -> None:
    """Download every report file of a job."""
    api = client()
    with transfer_bar() as bar:
        paths = api.jobs.reports.download(job_id, out, progress=download_progress(bar))
    if not paths:
        raise NotFound(404, "Not found", f"job {job_id} has no report files (yet)")
    typer.echo(f"{len(paths)} report files: " + ", ".join(str(p) for p in paths))
