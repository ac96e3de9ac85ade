"""``/v1/jobs``: create, list, get, cancel, events (list or SSE), checkpoints, samples, forgetting
probes of a tuned job and the reports they write."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import CeleryDep, CurrentTenant, IdempotencyKey, LinksDep, PageDep, SessionDep, SettingsDep
from api.problems import problem
from api.schemas import (
    CheckpointOut,
    EventOut,
    FileLink,
    ForgettingProbeCreate,
    JobCreate,
    JobMetricsOut,
    JobOut,
    ListResponse,
    ReportOut,
    SampleOut,
    WebhookDeliveryOut,
)
from api.sse import event_out, stream_events
from core.enums import JobStatus
from core.errors import InvalidError
from core.queue import enqueue_job
from core.services import idempotency, job_events, job_metrics, jobs, outputs, probes, webhooks
from core.storage.keys import report_prefix

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=201, summary="Start a tuning job", response_model=JobOut)
def create_job(
    session: SessionDep,
    tenant: CurrentTenant,
    celery: CeleryDep,
    settings: SettingsDep,
    body: JobCreate,
    idempotency_key: IdempotencyKey = None,
):
    webhook = None
    if body.webhook is not None:  # the operator's rules: scheme, allowed hosts, no private addresses
        webhook = {"url": webhooks.check_url(body.webhook.url, settings), "events": body.webhook.events}
    job = jobs.create(
        session,
        tenant_id=tenant.id,
        base_model_id=body.base_model,
        dataset_id=body.dataset,
        method=body.method,
        hyperparameters=body.hyperparameters,
        validation_labels=body.validation_labels,
        validation_prompts=body.validation_prompts,
        seed=body.seed,
        metadata=body.metadata,
        gpus=body.resources.gpus,
        nodes=body.resources.nodes,
        worker_gpus=settings.worker_gpus,
        resume_from=body.resume_from,
        dry_run=body.dry_run,
        webhook=webhook,
        max_queued=settings.tenant_max_queued_jobs,
        idempotency_key=idempotency_key,
        fingerprint=idempotency.request_hash(body.model_dump(mode="json")),
    )
    return _enqueued(session, celery, job)


def send_to_workers(session, celery, job) -> str | None:
    """Send a queued job to the workers (also on a replay: a lost message is harmless to resend, claims
    decide); a broker failure fails the job and returns why, else None. The dashboard's forms call it too."""
    if job.status == JobStatus.QUEUED:
        try:
            enqueue_job(celery, job.id)
        except Exception as err:  # noqa: BLE001 - any broker failure
            log.error("enqueue of %s failed: %s", job.id, err)
            jobs.mark_failed(session, job_id=job.id, error=f"could not be enqueued: {err}")
            return f"job {job.id} could not be enqueued: the broker is unavailable"
    return None


def _enqueued(session, celery, job):
    """The job sent to the workers, or a 503 problem when the broker failed (the job is then failed)."""
    if (failure := send_to_workers(session, celery, job)) is not None:
        return problem(503, failure, job=job.id)
    return JobOut.of(job)


@router.post(
    "/{job_id}/forgetting-probes",
    status_code=201,
    response_model=JobOut,
    summary="Probe a tuned DiT job's checkpoint for the chain of forgetting (starts a probe job)",
)
def create_forgetting_probe(
    session: SessionDep,
    tenant: CurrentTenant,
    celery: CeleryDep,
    settings: SettingsDep,
    job_id: str,
    body: ForgettingProbeCreate,
    idempotency_key: IdempotencyKey = None,
):
    """For swap steps t* over the schedule, denoise with one model down to t* and finish with the
    other (tuned→base and base→tuned); the probe job's metrics hold FD against the real images per
    t*, and its reports `probe.json` and `probe.png`."""
    job = probes.create_forgetting_probe(
        session,
        tenant_id=tenant.id,
        job_id=job_id,
        checkpoint_step=body.checkpoint_step,
        dataset_id=body.dataset,
        points=body.points,
        samples_per_class=body.samples_per_class,
        guidance=body.guidance,
        sample_steps=body.sample_steps,
        seed=body.seed,
        guidance_mode=body.guidance_mode,
        metadata=body.metadata,
        max_queued=settings.tenant_max_queued_jobs,
        idempotency_key=idempotency_key,
        fingerprint=idempotency.request_hash({"job": job_id, **body.model_dump(mode="json")}),
    )
    return _enqueued(session, celery, job)


@router.get("", summary="List jobs, newest first")
def list_jobs(
    session: SessionDep,
    tenant: CurrentTenant,
    page: PageDep,
    status: Annotated[JobStatus | None, Query()] = None,
) -> ListResponse[JobOut]:
    result = jobs.list_page(session, tenant_id=tenant.id, status=status, limit=page.limit, after=page.after)
    return ListResponse(data=[JobOut.of(j) for j in result.data], has_more=result.has_more)


@router.get("/{job_id}", summary="Get a job: status, progress, ETA, metrics, error")
def get_job(session: SessionDep, tenant: CurrentTenant, job_id: str) -> JobOut:
    return JobOut.of(jobs.get(session, tenant_id=tenant.id, job_id=job_id))


@router.post("/{job_id}/cancel", summary="Cancel a job")
def cancel_job(session: SessionDep, tenant: CurrentTenant, job_id: str) -> JobOut:
    return JobOut.of(jobs.cancel(session, tenant_id=tenant.id, job_id=job_id))


@router.get(
    "/{job_id}/events",
    summary="A job's events, oldest first; ?stream=true or Accept: text/event-stream for SSE",
    response_model=ListResponse[EventOut],
)
def list_events(
    request: Request,
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    job_id: str,
    page: PageDep,
    stream: bool = False,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
):
    jobs.get(session, tenant_id=tenant.id, job_id=job_id)
    cursor = last_event_id or page.after
    after = job_events.parse_id(cursor) if cursor else None
    if cursor and after is None:
        raise InvalidError.field("after", "must be an event id such as evt_12")
    if stream or "text/event-stream" in request.headers.get("accept", ""):
        frames = stream_events(request, job_id, after, request.app.state.poll_seconds)
        return StreamingResponse(
            frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    result = job_events.list_page(session, job_id=job_id, limit=page.limit, after=after)
    return JSONResponse(
        ListResponse(data=[event_out(e) for e in result.data], has_more=result.has_more).model_dump(
            mode="json"
        )
    )


@router.get("/{job_id}/metrics", summary="A job's metrics history (losses split target/bank, lr, images/s)")
def get_metrics(
    session: SessionDep,
    tenant: CurrentTenant,
    job_id: str,
    max_points: Annotated[int, Query(ge=2, le=10_000, description="Most points returned; a longer range is "
                                     "averaged over equal step ranges.")] = 1000,
    from_step: Annotated[int | None, Query(ge=0, description="First step of the range (zooming in).")] = None,
    to_step: Annotated[int | None, Query(ge=0, description="Last step of the range.")] = None,
) -> JobMetricsOut:
    """Every logged step (every `log_every` steps), as a series to plot; recorded while the job runs."""
    jobs.get(session, tenant_id=tenant.id, job_id=job_id)
    if from_step is not None and to_step is not None and to_step < from_step:
        raise InvalidError.field("to_step", f"{to_step} is before from_step {from_step}")
    series = job_metrics.series(session, job_id=job_id, max_points=max_points, from_step=from_step, to_step=to_step)
    return JobMetricsOut(job_id=job_id, **series)


@router.get("/{job_id}/webhook-deliveries", summary="A job's webhook deliveries (the delivery log), oldest first")
def list_webhook_deliveries(
    session: SessionDep, tenant: CurrentTenant, job_id: str, page: PageDep
) -> ListResponse[WebhookDeliveryOut]:
    jobs.get(session, tenant_id=tenant.id, job_id=job_id)
    result = webhooks.list_page(session, job_id=job_id, limit=page.limit, after=page.after)
    return ListResponse(data=[WebhookDeliveryOut.of(d) for d in result.data], has_more=result.has_more)


@router.get("/{job_id}/checkpoints", summary="A job's checkpoints with download URLs")
def list_checkpoints(
    session: SessionDep, tenant: CurrentTenant, links: LinksDep, job_id: str, page: PageDep
) -> ListResponse[CheckpointOut]:
    jobs.get(session, tenant_id=tenant.id, job_id=job_id)
    result = outputs.list_checkpoints(session, job_id=job_id, limit=page.limit, after=page.after)
    data = [
        CheckpointOut(id=c.id, step=c.step, metrics=c.metrics, created_at=c.created_at,
                      files=[FileLink(path=path, url=url) for path, url in links.under(c.storage_prefix)])
        for c in result.data
    ]
    return ListResponse(data=data, has_more=result.has_more)


@router.get("/{job_id}/samples", summary="A job's sample grids with download URLs")
def list_samples(
    session: SessionDep, tenant: CurrentTenant, links: LinksDep, job_id: str, page: PageDep
) -> ListResponse[SampleOut]:
    jobs.get(session, tenant_id=tenant.id, job_id=job_id)
    result = outputs.list_samples(session, job_id=job_id, limit=page.limit, after=page.after)
    data = [SampleOut(id=s.id, step=s.step, created_at=s.created_at, url=links.url(s.storage_key))
            for s in result.data]
    return ListResponse(data=data, has_more=result.has_more)


@router.get("/{job_id}/reports", summary="Report files an analysis job wrote, with download URLs")
def list_reports(session: SessionDep, tenant: CurrentTenant, links: LinksDep, job_id: str) -> ListResponse[ReportOut]:
    jobs.get(session, tenant_id=tenant.id, job_id=job_id)
    data = [ReportOut(name=name, url=url) for name, url in links.under(report_prefix(job_id))]
    return ListResponse(data=data, has_more=False)
