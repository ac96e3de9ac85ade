"""API keys: shown once at creation, stored as sha256, each belonging to a tenant."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError
from core.ids import new_id
from core.services import tenants
from core.tables import ApiKey, Tenant, utcnow

KEY_PREFIX = "dtk_"


def hash_key(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    session: Session, *, tenant_name: str, name: str = "", secret: str | None = None
) -> tuple[ApiKey, str]:
    """Create a key for ``tenant_name`` (creating the tenant too); return the row and the secret."""
    return create_for(session, tenant=tenants.create(session, name=tenant_name), name=name, secret=secret)


def create_for(session: Session, *, tenant: Tenant, name: str = "", secret: str | None = None) -> tuple[ApiKey, str]:
    """Create a key for an existing ``tenant``; return the row and the secret (shown only once)."""
    secret = secret or KEY_PREFIX + secrets.token_urlsafe(32)
    existing = session.scalar(select(ApiKey).where(ApiKey.hash == hash_key(secret)))
    if existing is not None:
        return existing, secret
    key = ApiKey(
        id=new_id("api_key"), tenant_id=tenant.id, name=name, prefix=secret[:12], hash=hash_key(secret)
    )
    session.add(key)
    session.commit()
    return key, secret


def authenticate(session: Session, *, secret: str) -> Tenant | None:
    """The tenant of a valid, unrevoked key, else None."""
    stmt = (
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.hash == hash_key(secret), ApiKey.revoked_at.is_(None))
    )
    return session.scalar(stmt)


def list_for_tenant(session: Session, *, tenant_name: str) -> list[ApiKey]:
    """The keys of a tenant (hashes and prefixes only)."""
    stmt = select(ApiKey).join(Tenant).where(Tenant.name == tenant_name).order_by(ApiKey.id)
    return session.scalars(stmt).all()


def list_of(session: Session, *, tenant_id: str) -> list[ApiKey]:
    """The keys of the tenant ``tenant_id``, oldest first."""
    return session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.id)).all()


def revoke(session: Session, *, key: str, tenant_id: str | None = None) -> ApiKey:
    """Revoke a key named by its id or its prefix; with ``tenant_id``, only a key of that tenant.

    The next request with it is refused (the API does not cache keys unless an operator turns the
    cache on, see ``DIFFTUNE_AUTH_CACHE_SECONDS``). Revoking twice is harmless."""
    stmt = select(ApiKey).where(or_(ApiKey.id == key, ApiKey.prefix == key))
    if tenant_id is not None:
        stmt = stmt.where(ApiKey.tenant_id == tenant_id)
    found = session.scalars(stmt).all()
    if len(found) != 1:
        raise NotFoundError("API key", key) if not found else ConflictError(
            f"{len(found)} keys start with {key!r}; name the key by its id")
    if found[0].revoked_at is None:
        found[0].revoked_at = utcnow()
        session.commit()
    return found[0]
