"""``difftune base-models create | upload | list | get``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from difftune_client.cli._common import (
    JsonOption,
    UsageError,
    client,
    details,
    err,
    group,
    handled,
    print_json,
    table,
    take,
    upload,
    when,
)
from difftune_client.client import Client
from difftune_client.errors import DifftuneError
from difftune_client.types import BaseModelInfo

base_models_app = group("Base models of the service: register, upload, list, get.")


def parse_location(text: str) -> dict[str, Any]:
    """``hub:org/name[@revision]``, ``checkpoint:job_…[@step]``, ``local:/abs/dir`` (or ``/abs/dir``),
    ``s3://bucket/prefix`` or a JSON object."""
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError as error:
            raise UsageError(f"--location: not a JSON object ({error})") from None
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


def show_base_model(model: BaseModelInfo) -> None:
    details([("id", model.id), ("name", model.name), ("family", model.family), ("status", model.status),
             ("error", model.error), ("location", model.location),
             ("resolutions", model.resolutions.model_dump() if model.resolutions else None),
             ("created", when(model.created_at))])


def _wait_for_model(api: Client, model: BaseModelInfo) -> BaseModelInfo:
    with err().status(f"{model.id}: waiting for the load check") as status:
        model = api.base_models.wait_ready(model.id, on_update=lambda m: status.update(f"{m.id}: {m.status}"))
    if model.status == "failed":
        raise DifftuneError(f"base model {model.id} failed its load check: {model.error}")
    return model


WaitOption = Annotated[bool, typer.Option("--wait", help="Wait for the load check.")]


@base_models_app.command("create")
@handled
def base_models_create(
    name: Annotated[str, typer.Option(help="A name for the model.")],
    family: Annotated[str, typer.Option(help="dit, sd, sd-controlnet, sdxl, sdxl-controlnet, sd3 or flux.")],
    location: Annotated[str, typer.Option(help="hub:ORG/NAME[@REV], checkpoint:JOB[@STEP], local:/DIR or "
                                                "s3://BUCKET/PREFIX.")],
    wait: WaitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Register a diffusers-format base model."""
    api = client()
    model = api.base_models.create(name, family, parse_location(location))
    model = _wait_for_model(api, model) if wait else model
    print_json(model) if as_json else show_base_model(model)


@base_models_app.command("upload")
@handled
def base_models_upload(
    path: Annotated[Path, typer.Argument(help="A diffusers folder (zipped on the fly), or a zip or tar of one.")],
    name: Annotated[str, typer.Option(help="A name for the model.")],
    family: Annotated[str, typer.Option(help="Model family.")],
    wait: WaitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Upload a base model (for services without shared storage)."""
    api = client()
    model = upload(lambda progress: api.base_models.upload(path, name=name, family=family, progress=progress),
                   f"upload {path.name}")
    model = _wait_for_model(api, model) if wait else model
    print_json(model) if as_json else show_base_model(model)


@base_models_app.command("list")
@handled
def base_models_list(
    limit: Annotated[int, typer.Option(help="Most models shown.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List base models, newest first."""
    items = take(client().base_models.list(limit=min(limit, 100)), limit)
    if as_json:
        return print_json(items)
    table(["ID", "NAME", "FAMILY", "STATUS", "CREATED"],
          [[m.id, m.name, m.family, m.status, when(m.created_at)] for m in items])


@base_models_app.command("get")
@handled
def base_models_get(base_model_id: str, as_json: JsonOption = False) -> None:
    """Show a base model."""
    model = client().base_models.get(base_model_id)
    print_json(model) if as_json else show_base_model(model)
