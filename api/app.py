"""``create_app(settings)``: the FastAPI application and its shared state."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import dashboard, metrics, openapi, problems
from api.auth_cache import TenantCache
from api.gate import Gate
from api.rate_limit import RateLimiter
from api.routes import api_keys as key_routes
from api.routes import base_models, datasets, files, health, jobs, model_uploads, webhooks
from api.uploads import ContentLengthLimit, ValidationSlots
from core.db import make_engine, make_sessionmaker
from core.queue import enqueue_webhook, make_celery
from core.revocations import Revocations, shared_state_url
from core.services import api_keys
from core.services import webhooks as webhook_service
from core.settings import Settings
from core.storage import make_storage

log = logging.getLogger(__name__)
MULTIPART_OVERHEAD = 64 * 1024  # boundary and form fields around an uploaded archive


def bootstrap(app: FastAPI) -> None:
    """Ensure the configured bootstrap tenant and key exist; print a generated key once."""
    settings: Settings = app.state.settings
    if not settings.bootstrap_tenant:
        return
    secret = (settings.bootstrap_api_key.get_secret_value() if settings.bootstrap_api_key else "") or None
    with app.state.sessionmaker() as session:
        if secret is None and api_keys.list_for_tenant(session, tenant_name=settings.bootstrap_tenant):
            return
        _, secret_out = api_keys.create(
            session, tenant_name=settings.bootstrap_tenant, name="bootstrap", secret=secret
        )
    if secret is None:
        print(f"difftune: API key for tenant {settings.bootstrap_tenant!r}: {secret_out}", flush=True)


def create_app(settings: Settings, *, poll_seconds: float = 1.0) -> FastAPI:
    """The API for ``settings``; the database must already be migrated (``python -m migrations``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bootstrap(app)
        yield
        app.state.engine.dispose()

    app = FastAPI(
        title="Diff-Tuning fine-tuning service",
        version="1",
        summary="Upload a dataset, register a base model, start a Diff-Tuning job, download checkpoints.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings.database_url)
    app.state.sessionmaker = make_sessionmaker(app.state.engine)
    app.state.storage = make_storage(settings)
    app.state.celery = make_celery(settings)
    webhook_service.set_dispatcher(lambda delivery_id: enqueue_webhook(app.state.celery, delivery_id))
    app.state.poll_seconds = poll_seconds
    app.state.tenant_cache = TenantCache(ttl=settings.auth_cache_seconds)
    app.state.revocations = Revocations(shared_state_url(settings))
    app.state.validation_slots = ValidationSlots(settings.max_concurrent_validations)
    problems.install(app)
    openapi.install(app)
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    app.state.metrics = metrics.install(app, token)
    app.include_router(health.router)
    upload_limit = settings.max_upload_bytes + MULTIPART_OVERHEAD
    json_limit = settings.max_json_bytes
    model_limit = settings.max_model_upload_bytes + MULTIPART_OVERHEAD
    app.add_middleware(ContentLengthLimit, limits={datasets.router.prefix: upload_limit,
                                                   model_uploads.router.prefix: model_limit,
                                                   base_models.router.prefix: json_limit,
                                                   jobs.router.prefix: json_limit,
                                                   key_routes.router.prefix: json_limit,
                                                   webhooks.router.prefix: json_limit,
                                                   dashboard.PREFIX: json_limit})
    app.state.rate_limiter = RateLimiter(settings.rate_limit, shared_state_url(settings))
    app.add_middleware(Gate)
    app.include_router(datasets.router, max_body_size=upload_limit)
    app.include_router(model_uploads.router, max_body_size=model_limit)
    for module in (base_models, jobs, key_routes, files, webhooks):  # JSON bodies: bounded while they stream in (413)
        app.include_router(module.router, max_body_size=json_limit)
    dashboard.install(app, max_body_size=json_limit)  # the web dashboard at /ui (its forms are small too)
    return app
