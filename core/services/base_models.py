"""Base models: registered by family and location; the worker later marks them ready or failed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.enums import BaseModelStatus
from core.ids import new_id
from core.services import idempotency
from core.services.common import owned
from core.services.pagination import Page, paginate
from core.tables import RegisteredModel

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
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> RegisteredModel:
    """Register a base model as ``pending`` (``family`` is a ``contract.families`` api_name)."""
    request = idempotency.Request(session, tenant_id, SCOPE, idempotency_key, fingerprint)
    if earlier := request.earlier():
        return get(session, tenant_id=tenant_id, base_model_id=earlier)
    model = RegisteredModel(id=new_id("base_model"), tenant_id=tenant_id, name=name, family=family,
                            location=location)
    session.add(model)
    return get(session, tenant_id=tenant_id, base_model_id=request.commit(model.id))


def _set_status(session: Session, base_model_id: str, status: BaseModelStatus, error: str | None,
                **values: Any) -> None:
    stmt = (update(RegisteredModel).where(RegisteredModel.id == base_model_id)
            .values(status=status, error=error, **values))
    session.execute(stmt)
    session.commit()


def mark_ready(session: Session, *, base_model_id: str, image_size: int | None = None) -> None:
    """The worker loaded the model (and, from a load check, learned the image size it generates)."""
    values = {"image_size": image_size} if image_size is not None else {}
    _set_status(session, base_model_id, BaseModelStatus.READY, None, **values)


def mark_failed(session: Session, *, base_model_id: str, error: str) -> None:
    """The worker could not load the model; ``error`` says why."""
    _set_status(session, base_model_id, BaseModelStatus.FAILED, error)
