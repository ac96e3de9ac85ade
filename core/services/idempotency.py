"""``Idempotency-Key``: remember which resource a POST created, so a retry gets the same one."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import InvalidError
from core.tables import IdempotencyKey

HEADER = "Idempotency-Key"


def request_hash(payload: Any) -> str:
    """A stable fingerprint of a request body."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def get(session: Session, *, tenant_id: str, scope: str, key: str | None, fingerprint: str) -> str | None:
    """The id created earlier under ``key``, or None; a different request under the same key is an error."""
    if key is None:
        return None
    row = session.get(IdempotencyKey, (tenant_id, scope, key))
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise InvalidError.field(HEADER, "this key was already used with a different request")
    return row.resource_id


def create(
    session: Session, *, tenant_id: str, scope: str, key: str | None, fingerprint: str, resource_id: str
) -> None:
    """Record ``key`` → ``resource_id`` in the caller's transaction (no commit)."""
    if key is not None:
        session.add(
            IdempotencyKey(
                tenant_id=tenant_id, scope=scope, key=key, request_hash=fingerprint, resource_id=resource_id
            )
        )


def commit(session: Session, *, tenant_id: str, scope: str, key: str | None, fingerprint: str) -> str | None:
    """Commit; when a concurrent request with the same key won the race, roll back and return its id."""
    try:
        session.commit()
        return None
    except IntegrityError:
        session.rollback()
        if winner := get(session, tenant_id=tenant_id, scope=scope, key=key, fingerprint=fingerprint):
            return winner
        raise


@dataclass(frozen=True)
class Request:
    """One create request's idempotency record: the id it made earlier, and the commit of a new one."""

    session: Session
    tenant_id: str
    scope: str
    key: str | None
    fingerprint: str = ""

    def _fields(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "scope": self.scope, "key": self.key, "fingerprint": self.fingerprint}

    def earlier(self) -> str | None:
        """The id this key created before (a retry), or None."""
        return get(self.session, **self._fields())

    def commit(self, resource_id: str) -> str:
        """Record the key with the caller's new resource and commit; return the id that won
        (``resource_id``, or a concurrent request's under the same key)."""
        create(self.session, **self._fields(), resource_id=resource_id)
        return commit(self.session, **self._fields()) or resource_id
