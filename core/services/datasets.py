"""Datasets: validate an uploaded archive, store it normalised, and keep a row with its stats."""

from __future__ import annotations

import json
import tempfile
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from contract.buckets import bucket_report, expand_sizes
from core.datasets import archive, inspection, pack, thumbnails
from core.enums import JobStatus
from core.errors import ConflictError, InvalidError
from core.ids import new_id
from core.services import idempotency
from core.services.common import owned
from core.services.pagination import Page, paginate
from core.storage import Storage
from core.storage.keys import (
    dataset_archive_key,
    dataset_manifest_key,
    dataset_prefix,
    dataset_thumbnails_key,
)
from core.tables import Dataset, Job

SCOPE = "datasets"


def get(session: Session, *, tenant_id: str, dataset_id: str) -> Dataset:
    """The tenant's dataset, or ``NotFoundError``."""
    return owned(session, Dataset, dataset_id, tenant_id=tenant_id, kind="dataset")


def image_sizes(dataset: Dataset) -> list[tuple[int, int]]:
    """(width, height) of each training image, from the stats recorded at upload; ``ConflictError`` for a
    dataset uploaded before they were recorded."""
    recorded = dataset.stats.get("image_sizes")
    if recorded is None:
        raise ConflictError(f"dataset {dataset.id} was uploaded before image sizes were recorded; upload it again "
                            "to see its aspect-ratio buckets")
    return expand_sizes(recorded)


def buckets(session: Session, *, tenant_id: str, dataset_id: str, resolution: int, bucket_step: int,
            bucket_max_aspect: float) -> dict:
    """The aspect-ratio bucket histogram of the tenant's dataset at these settings."""
    dataset = get(session, tenant_id=tenant_id, dataset_id=dataset_id)
    if bucket_step > resolution:
        raise InvalidError.field("bucket_step", f"{bucket_step}px is larger than the resolution {resolution}px")
    report = bucket_report(image_sizes(dataset), resolution=resolution, bucket_step=bucket_step,
                           bucket_max_aspect=bucket_max_aspect)
    return {"dataset_id": dataset.id, **report}


def list_page(session: Session, *, tenant_id: str, limit: int = 20, after: str | None = None) -> Page[Dataset]:
    """The tenant's datasets, newest first."""
    stmt = select(Dataset).where(Dataset.tenant_id == tenant_id)
    return paginate(session, stmt, key=Dataset.id, limit=limit, after=after)


def _store(
    storage: Storage, dataset_id: str, stream: BinaryIO, limits: archive.Limits, workdir: Path
) -> tuple[inspection.DatasetInfo, int]:
    """Validate ``stream`` and upload the normalised tar and manifest; return (info, tar size)."""
    with tempfile.TemporaryDirectory(prefix="upload-", dir=workdir) as tmp:
        root = Path(tmp) / "files"
        files = archive.extract(stream, root, limits)
        info = inspection.inspect(root, files, max_pixels=limits.max_image_pixels)
        out = Path(tmp) / "data.tar"
        pack.write_tar(root / info.stats["root"], info, out)
        storage.put_file(dataset_archive_key(dataset_id), out, content_type="application/x-tar")
        manifest = json.dumps(pack.manifest(info)).encode()
        storage.put_stream(
            dataset_manifest_key(dataset_id), BytesIO(manifest), content_type="application/json"
        )
        strip = thumbnails.strip_png(root / info.stats["root"], info.entries)
        storage.put_stream(dataset_thumbnails_key(dataset_id), BytesIO(strip), content_type="image/png")
        return info, out.stat().st_size


def create(
    session: Session,
    *,
    tenant_id: str,
    name: str,
    stream: BinaryIO,
    storage: Storage,
    limits: archive.Limits,
    workdir: Path,
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> Dataset:
    """Validate and store an uploaded archive; a rejected upload leaves no row and no objects."""
    request = idempotency.Request(session, tenant_id, SCOPE, idempotency_key, fingerprint)
    if earlier := request.earlier():
        return get(session, tenant_id=tenant_id, dataset_id=earlier)
    dataset_id = new_id("dataset")
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        info, size = _store(storage, dataset_id, stream, limits, workdir)
        dataset = Dataset(
            id=dataset_id,
            tenant_id=tenant_id,
            name=name,
            layout=info.layout,
            num_images=len(info.entries),
            num_classes=len(info.classes) if info.classes is not None else None,
            classes=info.classes,
            stats=info.stats,
            size_bytes=size,
            storage_prefix=dataset_prefix(dataset_id),
        )
        session.add(dataset)
        winner = request.commit(dataset_id)
    except BaseException:
        session.rollback()
        storage.delete_prefix(dataset_prefix(dataset_id))
        raise
    if winner != dataset_id:  # a concurrent request with the same key stored it first
        storage.delete_prefix(dataset_prefix(dataset_id))
    return get(session, tenant_id=tenant_id, dataset_id=winner)


def delete(session: Session, *, tenant_id: str, dataset_id: str, storage: Storage) -> None:
    """Delete a dataset that no unfinished job uses, then its objects."""
    dataset = get(session, tenant_id=tenant_id, dataset_id=dataset_id)
    busy = session.scalar(select(Job.id).where(Job.dataset_id == dataset_id, Job.status.in_(JobStatus.unfinished())).limit(1))
    if busy:
        raise ConflictError(f"dataset {dataset_id} is used by unfinished job {busy}")
    session.delete(dataset)
    session.commit()
    storage.delete_prefix(dataset_prefix(dataset_id))
