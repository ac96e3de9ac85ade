"""``/v1/webhooks/secret``: the tenant's webhook signing secret (read, rotate)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentTenant, SessionDep
from api.schemas import WebhookSecretOut
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
