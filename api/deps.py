"""Request dependencies as ``Annotated`` aliases: session, current tenant, storage, settings, paging."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.problems import Unauthorized
from api.uploads import ValidationSlots
from core.errors import InvalidError
from core.settings import Settings
from core.storage import Storage
from core.tables import Tenant

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer dtk_…`")


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; services commit."""
    with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Tenant:
    """The tenant that owns the bearer key, as ``api.gate.Gate`` authenticated it before the body was read
    (``credentials`` declares the scheme in the OpenAPI document)."""
    tenant = getattr(request.state, "tenant", None)
    if tenant is None:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    return tenant


CurrentTenant = Annotated[Tenant, Depends(get_tenant)]


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


def get_storage(request: Request) -> Storage:
    """The app's object store."""
    return request.app.state.storage


def get_celery(request: Request) -> Celery:
    """The producer-side Celery app."""
    return request.app.state.celery


def get_validation_slots(request: Request) -> ValidationSlots:
    """The app's bound on concurrent archive validations."""
    return request.app.state.validation_slots


SettingsDep = Annotated[Settings, Depends(get_settings)]
SlotsDep = Annotated[ValidationSlots, Depends(get_validation_slots)]
StorageDep = Annotated[Storage, Depends(get_storage)]
CeleryDep = Annotated[Celery, Depends(get_celery)]


@dataclass(frozen=True)
class DownloadLinks:
    """Download URLs for stored objects, valid for ``DIFFTUNE_DOWNLOAD_URL_TTL`` seconds."""

    storage: Storage
    ttl: int

    def url(self, key: str) -> str:
        """A link that downloads ``key``."""
        return self.storage.url_for(key, expires_in=self.ttl)

    def under(self, prefix: str) -> list[tuple[str, str]]:
        """(path relative to ``prefix``, link) for every object stored under ``prefix``."""
        return [(key[len(prefix):], self.url(key)) for key in self.storage.list(prefix)]


def get_links(storage: StorageDep, settings: SettingsDep) -> DownloadLinks:
    """Download links with the configured lifetime."""
    return DownloadLinks(storage, settings.download_url_ttl)


LinksDep = Annotated[DownloadLinks, Depends(get_links)]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", max_length=200, description="Retry-safe POST key.")
]


def refuse_nul(field: str, value: str | None) -> None:
    """A 422 naming ``field`` when a query or form value holds a NUL byte (PostgreSQL cannot store
    one, so it would surface as a 500); JSON bodies are checked by ``api.schemas``."""
    if value is not None and "\x00" in value:
        raise InvalidError.field(field, "contains a NUL byte")


@dataclass
class PageParams:
    """``limit`` and ``after`` of a list request."""

    limit: int
    after: str | None


def page_params(
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 20,
    after: Annotated[str | None, Query(max_length=64, description="Id of the last item seen.")] = None,
) -> PageParams:
    """Cursor pagination parameters."""
    refuse_nul("after", after)
    return PageParams(limit, after)


PageDep = Annotated[PageParams, Depends(page_params)]
