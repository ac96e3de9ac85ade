"""Jobs started from the dashboard go to the workers exactly as ``POST /v1/jobs`` sends them."""

from __future__ import annotations

from starlette.responses import Response

from api.dashboard.errors import problem_detail
from api.routes.jobs import _enqueued  # the REST routes' own step: a broker failure fails the job (503)


def send_to_workers(session, celery, job) -> str | None:
    """Enqueue a queued job; why it could not be (the job is then failed), else None."""
    answer = _enqueued(session, celery, job)
    return problem_detail(answer) if isinstance(answer, Response) else None
