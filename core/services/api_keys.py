"""API keys: shown once at creation, stored as sha256, each belonging to a tenant."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.ids import new_id
from core.services import tenants
from core.tables import ApiKey, Tenant

KEY_PREFIX = "dtk_"


def hash_key(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    session: Session, *, tenant_name: str, name: str = "", secret: str | None = None
) -> tuple[ApiKey, str]:
    """Create a key for ``tenant_name`` (creating the tenant too); return the row and the secret."""
    tenant = tenants.create(session, name=tenant_name)
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
