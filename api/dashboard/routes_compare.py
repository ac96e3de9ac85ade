"""Compare jobs side by side (standard fine-tuning vs Diff-Tuning): ``compare.js`` draws their curves on one
chart and their sample grids at the same step; the page holds the metrics and differing hyperparameters."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.dashboard.render import page
from api.dashboard.security import PREFIX
from api.dashboard.session import ViewerDep
from api.deps import SessionDep, refuse_nul
from api.schemas import JobOut
from core.errors import InvalidError
from core.services import jobs
from core.services.common import names
from core.tables import Dataset, RegisteredModel

router = APIRouter(prefix=PREFIX, include_in_schema=False)
MAX_JOBS = 8
FIGURES = ("loss", "loss_target", "loss_bank", "images_per_sec")


def job_ids(values: list[str]) -> list[str]:
    """The ids of ``?jobs=a&jobs=b`` or ``?jobs=a,b``, in order, once each."""
    ids = [part.strip() for value in values for part in value.split(",") if part.strip()]
    for value in ids:
        refuse_nul("jobs", value)
    ids = list(dict.fromkeys(ids))
    if len(ids) > MAX_JOBS:
        raise InvalidError.field("jobs", f"{len(ids)} jobs; compare at most {MAX_JOBS}")
    return ids


def differing(rows: list[JobOut]) -> list[tuple[str, list[Any]]]:
    """(hyperparameter, value per job) for each hyperparameter that is not the same in every job."""
    keys = sorted({k for row in rows for k in row.hyperparameters})
    table = [(k, [row.hyperparameters.get(k) for row in rows]) for k in keys]
    return [(k, values) for k, values in table if any(v != values[0] for v in values)]


@router.get("/compare")
def compare(request: Request, viewer: ViewerDep, session: SessionDep,
            jobs_: Annotated[list[str], Query(alias="jobs", max_length=MAX_JOBS * 2)] = []) -> Response:  # noqa: B006
    """Two or more of the tenant's jobs (another tenant's id is a 404); fewer: a picker of recent jobs."""
    tenant_id = viewer.tenant.id
    ids = job_ids(jobs_)
    rows = [JobOut.of(jobs.get(session, tenant_id=tenant_id, job_id=job_id)) for job_id in ids]
    recent = [] if len(rows) >= 2 else [JobOut.of(j) for j in jobs.list_page(session, tenant_id=tenant_id, limit=50).data]
    shown = rows + recent
    return page(request, "compare.html", viewer, jobs=rows, recent=recent, differing=differing(rows),
                figures=FIGURES, models=names(session, RegisteredModel, (j.base_model for j in shown), tenant_id=tenant_id),
                datasets=names(session, Dataset, (j.dataset for j in shown), tenant_id=tenant_id))
