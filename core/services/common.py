"""What every tenant-scoped service shares: fetching a row the tenant owns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import InvalidError, NotFoundError

Row = TypeVar("Row")


def owned(session: Session, table: type[Row], resource_id: str, *, tenant_id: str, kind: str) -> Row:
    """The row ``resource_id`` of ``table`` when ``tenant_id`` owns it, else ``NotFoundError``
    (another tenant's rows are indistinguishable from missing ones)."""
    row = session.get(table, resource_id) if "\x00" not in resource_id else None  # no id holds a NUL
    if row is None or row.tenant_id != tenant_id:
        raise NotFoundError(kind, resource_id)
    return row


def referenced(session: Session, table: type[Row], resource_id: str, *, tenant_id: str, kind: str,
               field: str) -> Row:
    """Like ``owned`` for a resource a request refers to: unknown ids are a 422 naming ``field``."""
    try:
        return owned(session, table, resource_id, tenant_id=tenant_id, kind=kind)
    except NotFoundError as err:
        raise InvalidError.field(field, str(err)) from None


def names(session: Session, table: type[Row], ids: Iterable[str | None], *, tenant_id: str) -> dict[str, str]:
    """``{id: name}`` of the rows among ``ids`` that ``tenant_id`` owns (one query; others are left out)."""
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    rows = session.execute(select(table.id, table.name).where(table.id.in_(wanted), table.tenant_id == tenant_id))
    return {row_id: name for row_id, name in rows}
