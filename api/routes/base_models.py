"""``/v1/base-models``: register (a location, or an uploaded archive), list, get."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from api.deps import CeleryDep, CurrentTenant, IdempotencyKey, PageDep, SessionDep, SettingsDep
from api.schemas import BaseModelCreate, BaseModelOut, ListResponse
from core.enums import BaseModelStatus
from core.queue import enqueue_base_model_check
from core.services import base_models, idempotency

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/base-models", tags=["base models"])


@router.post("", status_code=201, summary="Register a base model (diffusers format)")
def create_base_model(
    session: SessionDep,
    tenant: CurrentTenant,
    celery: CeleryDep,
    settings: SettingsDep,
    body: BaseModelCreate,
    idempotency_key: IdempotencyKey = None,
) -> BaseModelOut:
    """Locations: `local` and `s3` only under what the operator allows, `hub`, or `checkpoint` (one of
    your jobs' checkpoints). Nothing about whether a path exists is revealed here: the load check
    (`status`) reports that."""
    model = base_models.create(
        session,
        tenant_id=tenant.id,
        name=body.name,
        family=body.family,
        location=body.location.model_dump(exclude_none=True),
        settings=settings,
        max_pending=settings.tenant_max_pending_checks,
        idempotency_key=idempotency_key,
        fingerprint=idempotency.request_hash(body.model_dump(mode="json")),
    )
    return checked(celery, model)


def checked(celery, model) -> BaseModelOut:
    """Ask a ``checks`` worker to load a pending model (jobs also mark it ready when they load it)."""
    if model.status == BaseModelStatus.PENDING:
        try:
            enqueue_base_model_check(celery, model.id)
        except Exception as err:  # noqa: BLE001 - registration must not depend on the broker
            log.warning("could not enqueue the load check of %s: %s", model.id, err)
    return BaseModelOut.of(model)


@router.get("", summary="List base models")
def list_base_models(session: SessionDep, tenant: CurrentTenant, page: PageDep) -> ListResponse[BaseModelOut]:
    result = base_models.list_page(session, tenant_id=tenant.id, limit=page.limit, after=page.after)
    return ListResponse(data=[BaseModelOut.of(m) for m in result.data], has_more=result.has_more)


@router.get("/{base_model_id}", summary="Get a base model")
def get_base_model(session: SessionDep, tenant: CurrentTenant, base_model_id: str) -> BaseModelOut:
    return BaseModelOut.of(base_models.get(session, tenant_id=tenant.id, base_model_id=base_model_id))
