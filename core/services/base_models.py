"""Base models: registered by family and location (scoped by ``model_locations``) or uploaded as an
archive; a ``checks`` worker later marks them ready or failed."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from contract.families import Resolutions
from core.datasets import archive
from core.datasets.archive import Limits
from core.enums import BaseModelStatus
from core.errors import QuotaExceeded, UploadRejected
from core.ids import new_id
from core.services import idempotency, model_locations
from core.services.common import owned
from core.services.pagination import Page, paginate
from core.settings import Settings
from core.storage import Storage
from core.storage.keys import base_model_prefix
from core.tables import RegisteredModel

MODEL_INDEX = "model_index.json"

SCOPE = "base-models"


def get(session: Session, *, tenant_id: str, base_model_id: str) -> RegisteredModel:
    """The tenant's base model, or ``NotFoundError``."""
    return owned(session, RegisteredModel, base_model_id, tenant_id=tenant_id, kind="base model")


def list_page(session: Session, *, tenant_id: str, limit: int = 20, after: str | None = None) -> Page[RegisteredModel]:
    """The tenant's base models, newest first."""
    stmt = select(RegisteredModel).where(RegisteredModel.tenant_id == tenant_id)
    return paginate(session, stmt, key=RegisteredModel.id, limit=limit, after=after)


def create(
    session: Session,
    *,
    tenant_id: str,
    name: str,
    family: str,
    location: dict[str, Any],
    settings: Settings,
    max_pending: int | None = None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> RegisteredModel:
    """Register a base model as ``pending`` (``family`` is a ``contract.families`` api_name) at a
    location ``model_locations.scoped`` allows; a tenant with ``max_pending`` models already waiting
    for their load check gets ``QuotaExceeded``."""
    request = idempotency.Request(session, tenant_id, SCOPE, idempotency_key, fingerprint)
    if earlier := request.earlier():
        return get(session, tenant_id=tenant_id, base_model_id=earlier)
    check_pending_quota(session, tenant_id=tenant_id, max_pending=max_pending)
    stored = model_locations.scoped(session, location, settings=settings, tenant_id=tenant_id, family=family)
    model = RegisteredModel(id=new_id("base_model"), tenant_id=tenant_id, name=name, family=family, location=stored)
    session.add(model)
    return get(session, tenant_id=tenant_id, base_model_id=request.commit(model.id))


def check_pending_quota(session: Session, *, tenant_id: str, max_pending: int | None) -> None:
    """``QuotaExceeded`` when the tenant already has ``max_pending`` models waiting for their load check."""
    if max_pending is None:
        return
    pending = session.scalar(select(func.count()).select_from(RegisteredModel).where(
        RegisteredModel.tenant_id == tenant_id, RegisteredModel.status == BaseModelStatus.PENDING))
    if pending >= max_pending:
        raise QuotaExceeded(f"this tenant already has {pending} base models waiting for their load check "
                            f"(the limit is {max_pending}); wait for them to be checked", retry_after=30)


def _check_diffusers_folder(root: Path, files: list[str]) -> str:
    """The folder of the archive that holds ``model_index.json`` (the root or one wrapping folder)."""
    top = "" if MODEL_INDEX in files else next(
        (f[: -len(MODEL_INDEX)] for f in files if f.count("/") == 1 and f.endswith("/" + MODEL_INDEX)), None)
    if top is None:
        raise UploadRejected("has no model_index.json at its root or in one top folder: a base model is a "
                             "diffusers folder as save_pretrained writes it")
    try:
        index = json.loads((root / top / MODEL_INDEX).read_text())
    except (OSError, ValueError) as err:
        raise UploadRejected(f"is not valid JSON ({err})", file=top + MODEL_INDEX) from None
    if not isinstance(index, dict) or not str(index.get("_class_name", "")).endswith("Pipeline"):
        raise UploadRejected("does not name a diffusers pipeline (_class_name)", file=top + MODEL_INDEX)
    return top


def create_from_archive(
    session: Session,
    *,
    tenant_id: str,
    name: str,
    family: str,
    stream: BinaryIO,
    storage: Storage,
    limits: Limits,
    workdir: Path,
    max_pending: int | None = None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> RegisteredModel:
    """Register a base model uploaded as a zip or tar of a diffusers folder: unpacked with the dataset
    limits (names, links, bombs), its files stored under ``base_models/{id}/`` before the row is
    committed (a failure leaves neither), then checked by a worker like any other."""
    request = idempotency.Request(session, tenant_id, SCOPE, idempotency_key, fingerprint)
    if earlier := request.earlier():
        return get(session, tenant_id=tenant_id, base_model_id=earlier)
    check_pending_quota(session, tenant_id=tenant_id, max_pending=max_pending)
    model_id = new_id("base_model")
    prefix = base_model_prefix(model_id)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="model-upload-", dir=workdir) as tmp:
            root = Path(tmp)
            files = archive.extract(stream, root, limits)
            top = _check_diffusers_folder(root, files)
            kept = [f for f in files if f.startswith(top)]
            for name_in_archive in kept:
                storage.put_file(prefix + name_in_archive[len(top):], root / name_in_archive)
        model = RegisteredModel(id=model_id, tenant_id=tenant_id, name=name, family=family,
                                location={"kind": model_locations.UPLOAD, "files": len(kept)})
        session.add(model)
        return get(session, tenant_id=tenant_id, base_model_id=request.commit(model.id))
    except BaseException:
        session.rollback()
        storage.delete_prefix(prefix)
        raise



def _set_status(session: Session, base_model_id: str, status: BaseModelStatus, error: str | None,
                **values: Any) -> None:
    stmt = (update(RegisteredModel).where(RegisteredModel.id == base_model_id)
            .values(status=status, error=error, **values))
    session.execute(stmt)
    session.commit()


def mark_ready(session: Session, *, base_model_id: str, resolutions: Resolutions | None = None) -> None:
    """The worker loaded the model (and, from a load check, learned the sizes it trains at)."""
    values = {"image_size": resolutions.native, "resolutions": resolutions.as_dict()} if resolutions else {}
    _set_status(session, base_model_id, BaseModelStatus.READY, None, **values)


def mark_failed(session: Session, *, base_model_id: str, error: str) -> None:
    """The worker could not load the model; ``error`` says why."""
    _set_status(session, base_model_id, BaseModelStatus.FAILED, error)
