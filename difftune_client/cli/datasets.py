"""``difftune datasets upload | list | get | buckets | delete``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from difftune_client.cli._common import (
    JsonOption,
    client,
    details,
    group,
    handled,
    print_json,
    size,
    table,
    take,
    upload,
    when,
)
from difftune_client.types import Dataset

datasets_app = group("Datasets of the service: upload (a folder, zip or tar), list, get, buckets, delete.")


def show_dataset(ds: Dataset) -> None:
    details([("id", ds.id), ("name", ds.name), ("layout", ds.layout), ("images", str(ds.num_images)),
             ("classes", ", ".join(ds.classes or [])), ("size", size(ds.size_bytes)),
             ("created", when(ds.created_at))])


@datasets_app.command("upload")
@handled
def datasets_upload(
    path: Annotated[Path, typer.Argument(help="A folder (zipped on the fly), or a zip or tar.")],
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the file's name).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Upload a dataset: class folders (cat/001.png) or images + metadata.jsonl."""
    api = client()
    dataset = upload(lambda progress: api.datasets.upload(path, name=name, progress=progress), f"upload {path.name}")
    print_json(dataset) if as_json else show_dataset(dataset)


@datasets_app.command("list")
@handled
def datasets_list(
    limit: Annotated[int, typer.Option(help="Most datasets shown.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List datasets, newest first."""
    items = take(client().datasets.list(limit=min(limit, 100)), limit)
    if as_json:
        return print_json(items)
    table(["ID", "NAME", "LAYOUT", "IMAGES", "CLASSES", "CREATED"],
          [[d.id, d.name, d.layout, str(d.num_images), str(d.num_classes or "-"), when(d.created_at)] for d in items])


@datasets_app.command("get")
@handled
def datasets_get(dataset_id: str, as_json: JsonOption = False) -> None:
    """Show a dataset."""
    dataset = client().datasets.get(dataset_id)
    print_json(dataset) if as_json else show_dataset(dataset)


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
    buckets = client().datasets.buckets(dataset_id, resolution=resolution, bucket_step=bucket_step,
                                        bucket_max_aspect=max_aspect)
    if as_json:
        return print_json(buckets)
    table(["BUCKET", "IMAGES"], [[bucket, str(count)] for bucket, count in buckets.histogram.items()])
    typer.echo(f"smaller than their bucket: {buckets.smaller_than_bucket}")


@datasets_app.command("delete")
@handled
def datasets_delete(dataset_id: str) -> None:
    """Delete a dataset and its files."""
    client().datasets.delete(dataset_id)
    typer.echo(f"deleted {dataset_id}")
