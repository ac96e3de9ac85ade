"""Base models: the list with each load check's status (``models.js`` follows the pending ones) and the
registration form, validated as ``POST /v1/base-models``."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from api.dashboard import forms
from api.dashboard.render import page
from api.dashboard.security import PREFIX
from api.dashboard.session import FormDep, Viewer, ViewerDep
from api.deps import CeleryDep, SessionDep, SettingsDep, refuse_nul
from api.routes.base_models import checked
from api.schemas import BaseModelCreate, BaseModelOut
from contract.families import API_FAMILY_NAMES
from core.errors import ServiceError
from core.services import base_models, idempotency

router = APIRouter(prefix=PREFIX, include_in_schema=False)
PAGE_SIZE = 50


def models_page(request: Request, viewer: Viewer, session, *, after: str | None = None, status: int = 200,
                typed: dict[str, str] | None = None, outcome: forms.Outcome | None = None) -> Response:
    """The list and the form, with what was typed and the errors (a location's by its input's name)."""
    outcome = outcome or forms.Outcome()
    result = base_models.list_page(session, tenant_id=viewer.tenant.id, limit=PAGE_SIZE, after=after)
    by_field = {(f.rsplit(".", 1)[-1] if f.startswith("location.") else f): m for f, m in outcome.by_field().items()}
    return page(request, "base_models.html", viewer, code=status, models=[BaseModelOut.of(m) for m in result.data],
                has_more=result.has_more, after=after, families=API_FAMILY_NAMES, kinds=list(forms.LOCATION_FIELDS),
                typed=typed or {"kind": "local", "family": "dit"}, errors=outcome.errors, by_field=by_field,
                idempotency_key=secrets.token_urlsafe(16))


@router.get("/base-models")
def base_models_page(request: Request, viewer: ViewerDep, session: SessionDep,
                     after: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    refuse_nul("after", after)
    return models_page(request, viewer, session, after=after)


@router.post("/base-models")
def register(request: Request, viewer: ViewerDep, form: FormDep, session: SessionDep, celery: CeleryDep,
             settings: SettingsDep) -> Response:
    """Register a base model; its load check is queued (``checks`` workers) as the REST API does."""
    outcome, status = forms.model_request(form), 422
    if outcome.request is not None:
        body: BaseModelCreate = outcome.request
        try:
            model = base_models.create(
                session, tenant_id=viewer.tenant.id, name=body.name, family=body.family,
                location=body.location.model_dump(exclude_none=True), settings=settings,
                max_pending=settings.tenant_max_pending_checks,
                idempotency_key=str(form.get("idempotency_key") or "")[:200] or None,
                fingerprint=idempotency.request_hash(body.model_dump(mode="json")))
        except ServiceError as err:
            outcome, status = forms.Outcome(errors=forms.service_errors(err)), forms.status_of(err)
        else:
            checked(celery, model)
            return RedirectResponse(f"{PREFIX}/base-models#{model.id}", status_code=303)
    return models_page(request, viewer, session, status=status, typed=forms.values(form), outcome=outcome)
