"""Base models: registered by family and location; the worker later marks them ready or failed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.errors import NotFoundError
from core.ids import new_id
from core.services import idempotency
from core.services.pagination import Page, paginate
from core.tables import BaseModel

SCOPE = "base-models"
FAMILIES = ("dit", "sd", "sd-controlnet")


def get(session: Session, *, tenant_id: str, base_model_id: str) -> BaseModel:
    """The tenant's base model, or ``NotFoundError``."""
    model = session.get(BaseModel, base_model_id)
    if model is None or model.tenant_id != tenant_id:
        raise NotFoundError("base model", base_model_id)
    return model


def list(session: Session, *, tenant_id: str, limit: int = 20, after: str | None = None) -> Page[BaseModel]:
    """The tenant's base models, newest first."""
    stmt = select(BaseModel).where(BaseModel.tenant_id == tenant_id)
    return paginate(session, stmt, key=BaseModel.id, limit=limit, after=after)


def create(
    session: Session,
    *,
    tenant_id: str,
    name: str,
    family: str,
    location: dict[str, Any],
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> BaseModel:
    """Register a base model as ``pending``."""
    fields = {"tenant_id": tenant_id, "scope": SCOPE, "key": idempotency_key, "fingerprint": fingerprint}
    if previous := idempotency.get(session, **fields):
        return get(session, tenant_id=tenant_id, base_model_id=previous)
    model = BaseModel(
        id=new_id("base_model"), tenant_id=tenant_id, name=name, family=family, location=location
    )
    session.add(model)
    idempotency.create(session, **fields, resource_id=model.id)
    if winner := idempotency.commit(session, **fields):
        return get(session, tenant_id=tenant_id, base_model_id=winner)
    return model


def mark_ready(session: Session, *, base_model_id: str) -> None:
    """The worker loaded the model."""
    session.execute(update(BaseModel).where(BaseModel.id == base_model_id).values(status="ready", error=None))
    session.commit()


def mark_failed(session: Session, *, base_model_id: str, error: str) -> None:
    """The worker could not load the model; ``error`` says why."""
    session.execute(
        update(BaseModel).where(BaseModel.id == base_model_id).values(status="failed", error=error)
    )
    session.commit()
