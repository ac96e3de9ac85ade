"""RFC 9457 problem details for every error, including 404/405 and request validation."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from contract.train_config import named_field
from core.errors import (
    Busy,
    ConflictError,
    InvalidError,
    NotFoundError,
    QuotaExceeded,
    ServiceError,
    UploadRejected,
)
from core.storage import StorageError

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"


class Unauthorized(ServiceError):
    """Missing or unknown API key."""

    title = "Unauthorized"


STATUS = {NotFoundError: 404, ConflictError: 409, InvalidError: 422, UploadRejected: 422, Unauthorized: 401,
          QuotaExceeded: 429, Busy: 503}
LOCATIONS = ("body", "query", "path", "header", "cookie")
HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    if status == 413:  # the rest of a too-large body is not read: the connection ends with the answer
        headers = {**(headers or {}), "Connection": "close"}
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def field_name(loc: tuple[Any, ...]) -> str:
    """``("body", "hyperparameters", "bank_share")`` → ``hyperparameters.bank_share``."""
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in LOCATIONS else [str(p) for p in loc]
    return ".".join(parts) or (loc[0] if loc else "body")


def _field_error(loc: tuple[Any, ...], message: str) -> dict[str, str]:
    """A validation error as {field, message}; a model-level rule whose message starts with
    ``name: `` (e.g. a NUL byte in ``metadata``) is reported on that field."""
    field, (named, message) = field_name(loc), named_field(message)
    if named is not None:
        field = f"{field}.{named}" if field and field != "body" else named
    return {"field": field, "message": message}


def field_errors(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """pydantic's errors of a request as ``[{field, message}]``, as a 422 lists them (``loc`` starting with
    where the value came from, e.g. ``("body", "hyperparameters")``)."""
    return [_field_error(tuple(e["loc"]), e["msg"]) for e in errors]


def _service_error(request: Request, err: ServiceError) -> JSONResponse:
    status = next((code for kind, code in STATUS.items() if isinstance(err, kind)), 400)
    if isinstance(err, UploadRejected) and err.too_large:
        status = 413
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    return problem(
        status, err.detail, title=err.title, errors=err.errors, headers=headers or None, instance=request.url.path
    )


def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    if any(e.get("type") == "json_invalid" for e in err.errors()):
        return problem(
            400, "the request body is not valid JSON", title="Malformed JSON", instance=request.url.path
        )
    errors = field_errors(err.errors())
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, detail, title="Invalid request", errors=errors, instance=request.url.path)


def _http_error(request: Request, err: HTTPException) -> JSONResponse:
    detail = err.detail if isinstance(err.detail, str) else HTTPStatus(err.status_code).phrase
    if err.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}"
    headers = dict(getattr(err, "headers", None) or {})
    if err.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
        headers["Allow"] = ", ".join(sorted(_allowed_methods(request))) or headers.get("Allow", "")
    return problem(err.status_code, detail, headers=headers or None, instance=request.url.path)


def _allowed_methods(request: Request) -> set[str]:
    """Every method the OpenAPI paths accept here (Starlette reports only the first route's)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if compile_path(template)[0].match(request.url.path):
            methods |= {m.upper() for m in operations if m.upper() in HTTP_METHODS}
    return methods


def _storage_error(request: Request, err: StorageError) -> JSONResponse:
    log.warning("storage error on %s: %s", request.url.path, err)
    return problem(503, f"object storage is unavailable: {err}", instance=request.url.path)


def _database_unavailable(request: Request, err: DBAPIError) -> JSONResponse:
    if not isinstance(err, OperationalError | InterfaceError) and not err.connection_invalidated:
        return _unexpected(request, err)
    log.warning("database unavailable on %s: %s", request.url.path, type(err).__name__)
    return problem(503, "the database is unavailable; retry shortly", headers={"Retry-After": "5"},
                   instance=request.url.path)


def _unexpected(request: Request, err: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "internal error; see the server log", instance=request.url.path)


def install(app: FastAPI) -> None:
    """Register the problem handlers on ``app``."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(DBAPIError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
