"""Jobs: the list (filter by status, live progress), a job's page (charts, samples, checkpoints and the event
log are loaded by ``job.js`` from ``/v1``), cancelling a job and starting a forgetting probe of it."""

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
from api.routes.jobs import send_to_workers
from api.schemas import ForgettingProbeCreate, JobOut
from contract.families import Conditioning, family_of_api_name
from core.enums import JobKind, JobStatus
from core.errors import ConflictError, InvalidError, ServiceError
from core.services import idempotency, jobs, outputs, probes
from core.services.common import names
from core.tables import Dataset, Job, RegisteredModel

router = APIRouter(prefix=PREFIX, include_in_schema=False)
PAGE_SIZE = 50


def parse_status(value: str | None) -> JobStatus | None:
    """The status filter; empty means all, anything else is a 422 naming ``status``."""
    if not value:
        return None
    try:
        return JobStatus(value)
    except ValueError:
        raise InvalidError.field("status", f"must be one of {', '.join(JobStatus)}") from None


@router.get("/jobs")
def jobs_page(
    request: Request, viewer: ViewerDep, session: SessionDep,
    status: Annotated[str | None, Query(max_length=20)] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The tenant's jobs, newest first, a page at a time; ``jobs.js`` keeps their progress live."""
    refuse_nul("after", after)
    wanted = parse_status(status)
    result = jobs.list_page(session, tenant_id=viewer.tenant.id, status=wanted, limit=PAGE_SIZE, after=after)
    rows = [JobOut.of(job) for job in result.data]
    return page(request, "jobs.html", viewer, jobs=rows, status=wanted, after=after, has_more=result.has_more,
                models=names(session, RegisteredModel, (j.base_model for j in rows), tenant_id=viewer.tenant.id),
                datasets=names(session, Dataset, (j.dataset for j in rows), tenant_id=viewer.tenant.id))


def probe_problem(job: Job, model: RegisteredModel | None) -> str:
    """Why this job can never be probed for forgetting (empty when it can, once it has a checkpoint)."""
    if job.kind != JobKind.TUNE:
        return "only tuning jobs are probed"
    if model is None:
        return "its base model was deleted"
    if family_of_api_name(model.family).conditioning is not Conditioning.CLASS_LABEL:
        return f"the probe supports class-conditional models, not {model.family}"
    return ""


def job_page(request: Request, viewer: Viewer, session, job_id: str, *, status: int = 200, notice: str = "",
             probe: forms.Outcome | None = None, typed: dict[str, str] | None = None) -> Response:
    """A job's page; with a form's ``probe`` errors or a ``notice`` when an action was refused."""
    job = jobs.get(session, tenant_id=viewer.tenant.id, job_id=job_id)
    model = session.get(RegisteredModel, job.base_model_id) if job.base_model_id else None
    dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
    steps = outputs.checkpoint_steps(session, job_id=job.id)
    tuned = job.hyperparameters.get("tuned_job") if job.kind == JobKind.FORGETTING_PROBE else None
    return page(request, "job.html", viewer, code=status, job=JobOut.of(job), model=model, dataset=dataset,
                checkpoint_steps=steps, tuned_job=tuned, notice=notice,
                probe_problem=probe_problem(job, model),
                probe_errors=(probe or forms.Outcome()).by_field(), probe_typed=typed or {},
                probe_fields=[f for f in forms.probe_fields() if f["name"] != "checkpoint_step"],
                idempotency_key=secrets.token_urlsafe(16))


@router.get("/jobs/{job_id}")
def job_view(request: Request, viewer: ViewerDep, session: SessionDep, job_id: str) -> Response:
    return job_page(request, viewer, session, job_id)


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, viewer: ViewerDep, form: FormDep, session: SessionDep, job_id: str) -> Response:
    """Cancel the job (queued: at once; running: at its next step); a finished job is a 409 on its page."""
    try:
        jobs.cancel(session, tenant_id=viewer.tenant.id, job_id=job_id)
    except ConflictError as err:
        return job_page(request, viewer, session, job_id, status=409, notice=err.detail)
    return RedirectResponse(f"{PREFIX}/jobs/{job_id}", status_code=303)


@router.post("/jobs/{job_id}/forgetting-probes")
def start_probe(request: Request, viewer: ViewerDep, form: FormDep, session: SessionDep, celery: CeleryDep,
                settings: SettingsDep, job_id: str) -> Response:
    """Start a chain-of-forgetting probe of this job (``POST /v1/jobs/{id}/forgetting-probes``)."""
    jobs.get(session, tenant_id=viewer.tenant.id, job_id=job_id)  # 404 before any 422
    outcome = forms.probe_request(form)
    if outcome.request is not None:
        body: ForgettingProbeCreate = outcome.request
        key = str(form.get("idempotency_key") or "")[:200] or None
        try:
            probe = probes.create_forgetting_probe(
                session, tenant_id=viewer.tenant.id, job_id=job_id, dataset_id=body.dataset,
                **body.model_dump(exclude={"dataset"}), max_queued=settings.tenant_max_queued_jobs,
                idempotency_key=key, fingerprint=idempotency.request_hash({"job": job_id, **body.model_dump(mode="json")}))
        except ServiceError as err:
            return job_page(request, viewer, session, job_id, status=forms.status_of(err),
                            probe=forms.Outcome(errors=forms.service_errors(err)), typed=forms.values(form))
        if (failure := send_to_workers(session, celery, probe)) is not None:
            return job_page(request, viewer, session, job_id, status=503, notice=failure)
        return RedirectResponse(f"{PREFIX}/jobs/{probe.id}", status_code=303)
    return job_page(request, viewer, session, job_id, status=422, probe=outcome, typed=forms.values(form))
