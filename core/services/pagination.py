"""Cursor pagination over time-ordered ids: ``limit`` and ``after`` in, a page and ``has_more`` out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")
MAX_LIMIT = 100


@dataclass
class Page(Generic[T]):
    """One page of results."""

    data: list[T]
    has_more: bool


def paginate(
    session: Session,
    stmt: Select,
    *,
    key: InstrumentedAttribute,
    limit: int,
    after: Any = None,
    newest_first: bool = True,
) -> Page:
    """Rows of ``stmt`` after the cursor ``after`` (a value of ``key``), ordered by ``key``."""
    limit = max(1, min(limit, MAX_LIMIT))
    if after is not None:
        stmt = stmt.where(key < after if newest_first else key > after)
    stmt = stmt.order_by(key.desc() if newest_first else key.asc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    return Page(rows[:limit], len(rows) > limit)
