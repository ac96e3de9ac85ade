"""``/v1/api-keys``: a tenant lists, creates and revokes its own keys (operators use ``difftune keys``)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.deps import CurrentTenant, SessionDep
from api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, ListResponse
from core.services import api_keys

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])


@router.get("", summary="List the tenant's API keys (prefixes only)")
def list_keys(session: SessionDep, tenant: CurrentTenant) -> ListResponse[ApiKeyOut]:
    return ListResponse(data=[ApiKeyOut.of(k) for k in api_keys.list_of(session, tenant_id=tenant.id)],
                        has_more=False)


@router.post("", status_code=201, summary="Create another API key for the tenant (its secret is shown once)")
def create_key(session: SessionDep, tenant: CurrentTenant, body: ApiKeyCreate) -> ApiKeyCreated:
    key, secret = api_keys.create_for(session, tenant=session.merge(tenant, load=False), name=body.name)
    return ApiKeyCreated(**ApiKeyOut.of(key).model_dump(), secret=secret)


@router.delete("/{key_id}", status_code=204, summary="Revoke one of the tenant's API keys, at once")
def revoke_key(request: Request, session: SessionDep, tenant: CurrentTenant, key_id: str) -> Response:
    api_keys.revoke(session, key=key_id, tenant_id=tenant.id)
    request.app.state.revocations.announce()  # every API process drops its key cache
    request.app.state.tenant_cache.clear()
    return Response(status_code=204)
