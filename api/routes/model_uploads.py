"""``POST /v1/base-models/upload``: a base model uploaded as a zip or tar of a diffusers folder."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile

from api.deps import (
    CeleryDep,
    CurrentTenant,
    IdempotencyKey,
    SessionDep,
    SettingsDep,
    SlotsDep,
    StorageDep,
    refuse_nul,
)
from api.metrics import count_upload
from api.routes.base_models import checked
from api.routes.datasets import fingerprint
from api.schemas import BaseModelOut
from contract.families import API_FAMILY_NAMES
from core.datasets.archive import Limits
from core.errors import UploadRejected
from core.services import base_models

router = APIRouter(prefix="/v1/base-models/upload", tags=["base models"])
MAX_MODEL_FILES = 10_000


@router.post("", status_code=201, summary="Upload a base model (zip or tar of a diffusers folder)")
def upload_base_model(
    request: Request,
    session: SessionDep,
    tenant: CurrentTenant,
    celery: CeleryDep,
    settings: SettingsDep,
    storage: StorageDep,
    slots: SlotsDep,
    file: Annotated[UploadFile, File(description="A zip or tar of what `save_pretrained` writes "
                                                 "(model_index.json at its root or in one top folder).")],
    name: Annotated[str, Form(min_length=1, max_length=200)],
    family: Annotated[Literal[API_FAMILY_NAMES], Form(description="Model family.")],  # type: ignore[valid-type]
    idempotency_key: IdempotencyKey = None,
) -> BaseModelOut:
    """For teams without shared storage (the compose stack, a hosted service): the model is stored by
    the service and checked by a worker like any other; its `location` is `{"kind": "upload"}`."""
    filename = file.filename or "model"
    refuse_nul("name", name)
    refuse_nul("file", filename)
    if file.size is not None and file.size > settings.max_model_upload_bytes:
        raise UploadRejected(f"is larger than {settings.max_model_upload_bytes} bytes", file=filename, too_large=True)
    limits = Limits(MAX_MODEL_FILES, settings.max_model_upload_bytes * 2, settings.max_decompression_ratio)
    with slots.slot():
        model = base_models.create_from_archive(
            session, tenant_id=tenant.id, name=name, family=family, stream=file.file, storage=storage,
            limits=limits, workdir=settings.cache_dir / "uploads", max_pending=settings.tenant_max_pending_checks,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint(file.file, f"{name}\0{family}") if idempotency_key else "")
    count_upload(request, "base_model", file)
    return checked(celery, model)
