"""The web dashboard at ``/ui``: server-rendered pages (Jinja2) over the service layer, with small scripts of
our own that draw charts and follow jobs through the ``/v1`` endpoints (authorised by the session cookie).

``install(app)`` mounts it; ``api.app.create_app`` calls it. See docs/SERVICE.md, "Web dashboard".
"""

from __future__ import annotations

import secrets

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.dashboard import (
    errors,
    routes_auth,
    routes_compare,
    routes_datasets,
    routes_jobs,
    routes_models,
    routes_new_job,
)
from api.dashboard.render import STATIC, STATIC_URL
from api.dashboard.security import PREFIX, SecurityHeaders

# routes_new_job before routes_jobs: /ui/jobs/new is not a job id
ROUTERS = (routes_auth, routes_new_job, routes_jobs, routes_compare, routes_datasets, routes_models)


def install(app: FastAPI, *, max_body_size: int) -> None:
    """Mount the dashboard on ``app``: pages, static files, error pages and security headers."""
    settings = app.state.settings
    secret = settings.signing_secret.get_secret_value() if settings.signing_secret else None
    app.state.csrf_secret = (secret or secrets.token_hex(32)).encode()  # random: valid in this process only
    errors.install(app)
    app.add_middleware(SecurityHeaders, settings=settings)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC), name="dashboard-static")

    @app.get(PREFIX, include_in_schema=False)
    @app.get(PREFIX + "/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/jobs", status_code=303)

    for module in ROUTERS:
        app.include_router(module.router, max_body_size=max_body_size)
