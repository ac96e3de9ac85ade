"""``/v1/datasets``: upload (zip or tar), list, get, delete, and the aspect-ratio bucket histogram."""

from __future__ import annotations

import hashlib
from typing import Annotated, BinaryIO

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile

from api.deps import (
    CurrentTenant,
    IdempotencyKey,
    PageDep,
    SessionDep,
    SettingsDep,
    SlotsDep,
    StorageDep,
    refuse_nul,
)
from api.metrics import count_upload
from api.schemas import DatasetBuckets, DatasetOut, ListResponse
from contract.train_config import MAX_RESOLUTION
from core.datasets.archive import Limits
from core.errors import UploadRejected
from core.services import datasets

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def fingerprint(stream: BinaryIO, name: str) -> str:
    """The Idempotency-Key fingerprint of an uploaded file and its name."""
    digest = hashlib.sha256(name.encode() + b"\0")
    while chunk := stream.read(1024 * 1024):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


@router.post("", status_code=201, summary="Upload a dataset archive")
def create_dataset(
    request: Request,
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    storage: StorageDep,
    slots: SlotsDep,
    file: Annotated[UploadFile, File(description="A zip or tar: class folders, or images + metadata.jsonl.")],
    name: Annotated[str | None, Form(max_length=200)] = None,
    idempotency_key: IdempotencyKey = None,
) -> DatasetOut:
    filename = file.filename or "upload"
    refuse_nul("name", name)
    refuse_nul("file", filename)
    if file.size is not None and file.size > settings.max_upload_bytes:
        raise UploadRejected(
            f"is larger than {settings.max_upload_bytes} bytes", file=filename, too_large=True
        )
    limits = Limits(settings.max_upload_files, settings.max_extracted_bytes, settings.max_decompression_ratio,
                    settings.max_image_pixels)
    with slots.slot():
        dataset = datasets.create(
            session,
            tenant_id=tenant.id,
            name=name or filename,
            stream=file.file,
            storage=storage,
            limits=limits,
            workdir=settings.cache_dir / "uploads",
            idempotency_key=idempotency_key,
            fingerprint=fingerprint(file.file, name or filename) if idempotency_key else "",
        )
    count_upload(request, "dataset", file)
    return DatasetOut.of(dataset)


@router.get("", summary="List datasets")
def list_datasets(session: SessionDep, tenant: CurrentTenant, page: PageDep) -> ListResponse[DatasetOut]:
    result = datasets.list_page(session, tenant_id=tenant.id, limit=page.limit, after=page.after)
    return ListResponse(data=[DatasetOut.of(d) for d in result.data], has_more=result.has_more)


@router.get("/{dataset_id}", summary="Get a dataset")
def get_dataset(session: SessionDep, tenant: CurrentTenant, dataset_id: str) -> DatasetOut:
    return DatasetOut.of(datasets.get(session, tenant_id=tenant.id, dataset_id=dataset_id))


@router.get("/{dataset_id}/buckets", summary="The dataset's aspect-ratio bucket histogram")
def get_dataset_buckets(
    session: SessionDep,
    tenant: CurrentTenant,
    dataset_id: str,
    resolution: Annotated[int, Query(ge=8, le=MAX_RESOLUTION, description="Training resolution (bucket area: its square).")] = 1024,
    bucket_step: Annotated[int, Query(ge=2, le=MAX_RESOLUTION, description="Bucket sides are multiples of this.")] = 64,
    bucket_max_aspect: Annotated[float, Query(ge=1.0, le=8.0, description="Largest aspect ratio.")] = 2.0,
) -> DatasetBuckets:
    """How ``aspect_buckets: true`` would group the dataset's images at these settings (the same
    arithmetic the trainer uses), and how many are smaller than their bucket."""
    return DatasetBuckets(**datasets.buckets(session, tenant_id=tenant.id, dataset_id=dataset_id,
                                             resolution=resolution, bucket_step=bucket_step,
                                             bucket_max_aspect=bucket_max_aspect))


@router.delete("/{dataset_id}", status_code=204, summary="Delete a dataset and its files")
def delete_dataset(
    session: SessionDep, tenant: CurrentTenant, storage: StorageDep, dataset_id: str
) -> Response:
    datasets.delete(session, tenant_id=tenant.id, dataset_id=dataset_id, storage=storage)
    return Response(status_code=204)
