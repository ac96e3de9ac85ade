"""``/v1/webhooks``: the tenant's webhook signing secret (read, rotate) and its endpoint, which gets
every job event of the tenant (read, set, remove)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import CurrentTenant, SessionDep, SettingsDep
from api.schemas import WebhookEndpointOut, WebhookSecretOut, WebhookSpec
from core.services import webhooks
from core.tables import WebhookSecret

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _out(session, tenant_id: str, *, rotate: bool) -> WebhookSecretOut:
    secret = webhooks.tenant_secret(session, tenant_id=tenant_id, rotate=rotate)
    return WebhookSecretOut(secret=secret, created_at=session.get(WebhookSecret, tenant_id).created_at)


@router.get("/secret", summary="The tenant's webhook signing secret (made on first use)")
def get_secret(session: SessionDep, tenant: CurrentTenant) -> WebhookSecretOut:
    """Verify each delivery's `webhook-signature` with it (any Standard Webhooks library does)."""
    return _out(session, tenant.id, rotate=False)


@router.post("/secret", summary="Rotate the tenant's webhook signing secret")
def rotate_secret(session: SessionDep, tenant: CurrentTenant) -> WebhookSecretOut:
    """A new secret signs every delivery from now on (retries of earlier events included)."""
    return _out(session, tenant.id, rotate=True)


@router.get("/endpoint", summary="The tenant's webhook endpoint (404 when none is set)")
def get_endpoint(session: SessionDep, tenant: CurrentTenant) -> WebhookEndpointOut:
    """Where every job event of the tenant is POSTed (besides a job's own webhook)."""
    return WebhookEndpointOut.model_validate(webhooks.get_endpoint(session, tenant_id=tenant.id), from_attributes=True)


@router.put("/endpoint", summary="Set the tenant's webhook endpoint")
def set_endpoint(session: SessionDep, tenant: CurrentTenant, settings: SettingsDep,
                 body: WebhookSpec) -> WebhookEndpointOut:
    """Every event of every job of the tenant (all kinds) is POSTed here from now on, as well as to the job's
    own webhook; once when both are the same URL. The same rules as a job's webhook URL apply."""
    url = webhooks.check_url(body.url, settings, field="url")
    row = webhooks.set_endpoint(session, tenant_id=tenant.id, url=url, events=body.events)
    return WebhookEndpointOut.model_validate(row, from_attributes=True)


@router.delete("/endpoint", status_code=204, summary="Remove the tenant's webhook endpoint (404 when none is set)")
def delete_endpoint(session: SessionDep, tenant: CurrentTenant) -> Response:
    """No event is staged for it afterwards; deliveries already staged are still sent."""
    webhooks.delete_endpoint(session, tenant_id=tenant.id)
    return Response(status_code=204)
