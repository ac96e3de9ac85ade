"""Tenants: the teams that own every resource."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.ids import new_id
from core.tables import Tenant


def get_by_name(session: Session, *, name: str) -> Tenant | None:
    """The tenant called ``name``, if any."""
    return session.scalar(select(Tenant).where(Tenant.name == name))


def create(session: Session, *, name: str) -> Tenant:
    """Create the tenant ``name`` (or return the existing one)."""
    tenant = get_by_name(session, name=name)
    if tenant is None:
        tenant = Tenant(id=new_id("tenant"), name=name)
        session.add(tenant)
        session.commit()
    return tenant
