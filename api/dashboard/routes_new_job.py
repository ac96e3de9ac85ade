"""The new-job form: the common hyperparameters with their defaults, validated exactly as ``POST /v1/jobs``
(``api.schemas.JobCreate``, then ``core.services.jobs.create``), its 422 messages shown by their fields."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from api.dashboard import forms
from api.dashboard.errors import error_page
from api.dashboard.render import page
from api.dashboard.security import PREFIX
from api.dashboard.session import FormDep, Viewer, ViewerDep
from api.deps import CeleryDep, SessionDep, SettingsDep
from api.routes.jobs import send_to_workers
from api.schemas import JobCreate
from core.errors import ServiceError
from core.services import base_models, datasets, idempotency, jobs

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def form_page(request: Request, viewer: Viewer, session, *, typed: dict[str, str], status: int = 200,
              outcome: forms.Outcome | None = None) -> Response:
    """The form, with what was typed and the errors by field."""
    outcome = outcome or forms.Outcome()
    tenant_id = viewer.tenant.id
    return page(request, "new_job.html", viewer, code=status, typed=typed, errors=outcome.errors,
                by_field=outcome.by_field(), fields=[forms.field_help(name) for name in forms.JOB_FIELDS],
                models=base_models.list_page(session, tenant_id=tenant_id, limit=100).data,
                datasets=datasets.list_page(session, tenant_id=tenant_id, limit=100).data,
                idempotency_key=secrets.token_urlsafe(16))


@router.get("/jobs/new")
def new_job_form(request: Request, viewer: ViewerDep, session: SessionDep,
                 base_model: Annotated[str, Query(max_length=64)] = "",
                 dataset: Annotated[str, Query(max_length=64)] = "") -> Response:
    return form_page(request, viewer, session, typed={"base_model": base_model, "dataset": dataset})


def create(session, celery, settings, viewer: Viewer, body: JobCreate, form: FormData):
    """``jobs.create`` as ``POST /v1/jobs`` calls it; the form's idempotency key makes a double submit one job."""
    return jobs.create(
        session, tenant_id=viewer.tenant.id, base_model_id=body.base_model, dataset_id=body.dataset,
        method=body.method, hyperparameters=body.hyperparameters, validation_labels=body.validation_labels,
        validation_prompts=body.validation_prompts, seed=body.seed, metadata=body.metadata,
        gpus=body.resources.gpus, nodes=body.resources.nodes, worker_gpus=settings.worker_gpus,
        max_queued=settings.tenant_max_queued_jobs, idempotency_key=str(form.get("idempotency_key") or "")[:200] or None,
        fingerprint=idempotency.request_hash(body.model_dump(mode="json")))


@router.post("/jobs/new")
def create_job(request: Request, viewer: ViewerDep, form: FormDep, session: SessionDep, celery: CeleryDep,
               settings: SettingsDep) -> Response:
    outcome = forms.job_request(form)
    status = 422
    if outcome.request is not None:
        try:
            job = create(session, celery, settings, viewer, outcome.request, form)
        except ServiceError as err:
            outcome, status = forms.Outcome(errors=forms.service_errors(err)), forms.status_of(err)
        else:
            if (failure := send_to_workers(session, celery, job)) is not None:
                return error_page(request, 503, failure, title="Service unavailable")
            return RedirectResponse(f"{PREFIX}/jobs/{job.id}", status_code=303)
    return form_page(request, viewer, session, typed=forms.values(form), status=status, outcome=outcome)
