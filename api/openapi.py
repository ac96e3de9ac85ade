"""The OpenAPI document declares every error an operation can answer, as ``application/problem+json``
with one ``Problem`` schema (the shape ``api.problems`` emits), in place of FastAPI's ``HTTPValidationError``.

Most errors follow from an operation's shape (authenticated, a path id, a body); the few that depend on
what a route does are listed in ``ROUTE_ERRORS``.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from fastapi import FastAPI

from api.problems import MEDIA_TYPE

REF = "#/components/schemas/"
WITH_BODY = {"post", "put", "patch"}

PROBLEM_ERROR_SCHEMA: dict[str, Any] = {
    "title": "ProblemError",
    "type": "object",
    "description": "One error: the request `field` (dotted path) or the archive `file` at fault, and a `message`.",
    "properties": {
        "field": {"type": "string", "description": "The request field, e.g. `hyperparameters.bank_share`."},
        "file": {"type": "string", "description": "The member of an uploaded archive."},
        "message": {"type": "string"},
    },
    "minProperties": 1,
    "additionalProperties": False,
}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "An RFC 9457 problem. Extension members may follow (e.g. `job` on a 503 of a job that "
                   "could not be enqueued, `checks` on a 503 of /readyz).",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "`about:blank`: the status and title say what went wrong."},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The path of the request."},
        "errors": {"type": "array", "items": {"$ref": REF + "ProblemError"}},
    },
    "additionalProperties": True,
}

DESCRIPTIONS = {
    400: "The body is not valid JSON, or not a readable form",
    401: "Missing, unknown or revoked API key",
    403: "The download link is invalid or has expired",
    404: "No such resource (another tenant's resources are indistinguishable from missing ones)",
    409: "The request conflicts with the resource's current state",
    413: "The request body is over the limit",
    422: "Invalid request: `errors` names each field",
    429: "Too many requests with this API key: retry after `Retry-After` seconds",
    503: "A backend (database, broker or object storage) is unavailable; retry shortly",
}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait.", "required": True, "schema": {"type": "integer"}}},
    503: {"Retry-After": {"description": "Seconds to wait (when known).", "schema": {"type": "integer"}}},
}
# Errors that depend on what a route does, by (method, path template); tests/api/test_openapi.py checks
# that each entry names an operation.
ROUTE_ERRORS: dict[tuple[str, str], set[int]] = {
    ("delete", "/v1/datasets/{dataset_id}"): {409},
    ("post", "/v1/jobs/{job_id}/cancel"): {409},
    ("delete", "/v1/api-keys/{key_id}"): {409},  # a prefix that names several keys
    ("get", "/v1/files/{key}"): {403},
    ("get", "/v1/webhooks/endpoint"): {404},  # none is set
    ("delete", "/v1/webhooks/endpoint"): {404},
    ("get", "/readyz"): {503},
}
# Successful bodies that are not (only) JSON, by (method, path template): the 200's media types,
# and whether they replace FastAPI's ``application/json``. An event stream's schema describes one event.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One server-sent event: an event of the job (`event` is its type, `data` its JSON), or "
                   "`end` with the job's final status once it finished.",
    "required": ["event", "data"],
    "properties": {
        "id": {"type": "string", "description": "The event's id; resume with `Last-Event-ID`."},
        "event": {"type": "string"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"anyOf": [
                {"$ref": REF + "EventOut"},
                {"type": "object", "required": ["status"], "properties": {"status": {"$ref": REF + "JobStatus"}}},
            ]},
        },
    },
}
ROUTE_CONTENT: dict[tuple[str, str], tuple[dict[str, Any], bool]] = {
    ("get", "/v1/jobs/{job_id}/events"): ({"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}, False),
    ("get", "/v1/files/{key}"): ({"*/*": {"schema": {"type": "string", "format": "binary"}}}, True),
}


def problem_response(status: int) -> dict[str, Any]:
    """The response object of an error ``status``."""
    response: dict[str, Any] = {
        "description": DESCRIPTIONS[status],
        "content": {MEDIA_TYPE: {"schema": {"$ref": REF + "Problem"}}},
    }
    if status in HEADERS:
        response["headers"] = copy.deepcopy(HEADERS[status])
    return response


def operation_errors(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses ``operation`` can answer."""
    statuses = set(ROUTE_ERRORS.get((method, path), set()))
    if operation.get("security"):
        statuses |= {401, 422, 429, 503}  # the key is looked up in the database; services raise 422
    if "{" in path:
        statuses |= {404, 422}
    if operation.get("parameters"):
        statuses.add(422)
    if "requestBody" in operation:
        statuses |= {400, 422}
    if method in WITH_BODY and path.startswith("/v1/"):
        statuses.add(413)
    return statuses


def with_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (a FastAPI OpenAPI document) with the problem responses of every operation."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    if "Problem" in schemas:
        return schema
    schemas["Problem"] = copy.deepcopy(PROBLEM_SCHEMA)
    schemas["ProblemError"] = copy.deepcopy(PROBLEM_ERROR_SCHEMA)
    paths = schema.get("paths", {})
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status in sorted(operation_errors(method, path, operation)):
                responses[str(status)] = problem_response(status)
            if (method, path) in ROUTE_CONTENT:
                content, replace = ROUTE_CONTENT[method, path]
                ok = responses["200"]
                ok["content"] = {**({} if replace else ok.get("content", {})), **copy.deepcopy(content)}
    if REF + "HTTPValidationError" not in json.dumps(paths):  # FastAPI's 422, replaced above
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return schema


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) declare the problem responses."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        return with_problems(build())  # FastAPI caches the document; with_problems edits it once

    app.openapi = openapi  # type: ignore[method-assign]
