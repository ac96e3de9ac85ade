"""Exceptions: every API error is an :class:`ApiError` carrying the RFC 9457 problem+json fields."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx


class DifftuneError(Exception):
    """Base of every error this package raises."""


class ConfigurationError(DifftuneError, ValueError):
    """The client is missing a setting (e.g. no API key)."""


class ApiConnectionError(DifftuneError):
    """The service could not be reached (after the retries)."""


class WaitTimeout(DifftuneError, TimeoutError):
    """``wait`` gave up before the resource reached a final state."""


class ApiError(DifftuneError):
    """An error answer of the API (``application/problem+json``).

    ``errors`` is the problem's list of ``{"field"|"file": …, "message": …}``; ``retry_after`` the
    seconds of a ``Retry-After`` header (429, 503); ``body`` the whole problem document.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        type: str = "about:blank",
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
        response: httpx.Response | None = None,
    ):
        self.status, self.title, self.detail = status, title, detail
        self.errors = list(errors or [])
        self.type, self.retry_after = type, retry_after
        self.body = body or {}
        self.response = response
        super().__init__(self.message)

    @property
    def fields(self) -> list[str]:
        """The fields (or archive members) the problem names."""
        return [str(e.get("field") or e.get("file")) for e in self.errors if e.get("field") or e.get("file")]

    @property
    def message(self) -> str:
        """``detail``, followed by every named field's message that ``detail`` does not already say."""
        extra = []
        for error in self.errors:
            name = error.get("field") or error.get("file")
            text = f"{name}: {error.get('message', '')}".rstrip(": ") if name else str(error.get("message", ""))
            if text and text not in self.detail:
                extra.append(text)
        return f"{self.detail} ({'; '.join(extra)})" if extra else self.detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, title={self.title!r}, detail={self.detail!r})"


class BadRequest(ApiError):
    """400: e.g. a malformed JSON body."""


class Unauthorized(ApiError):
    """401: missing, unknown or revoked API key."""


class Forbidden(ApiError):
    """403: e.g. an invalid or expired download link."""


class NotFound(ApiError):
    """404: the resource does not exist or belongs to another tenant."""


class Conflict(ApiError):
    """409: the request conflicts with the resource's state (e.g. cancelling a finished job)."""


class TooLarge(ApiError):
    """413: an upload or body over the service's limits."""


class Invalid(ApiError):
    """422: a field of the request is invalid; ``fields`` names them."""


class RateLimited(ApiError):
    """429: over the key's rate limit or a tenant quota; ``retry_after`` says when to retry."""


class ServerError(ApiError):
    """5xx."""


class Unavailable(ServerError):
    """503: a dependency is down or the service is busy; ``retry_after`` when known."""


BY_STATUS: dict[int, type[ApiError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                        409: Conflict, 413: TooLarge, 422: Invalid, 429: RateLimited,
                                        503: Unavailable}


def retry_after(response: httpx.Response) -> float | None:
    """Seconds of the ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from(response: httpx.Response) -> ApiError:
    """The exception for an error ``response`` (its body must have been read)."""
    status = response.status_code
    body: dict[str, Any] = {}
    try:
        parsed = response.json()
        body = parsed if isinstance(parsed, dict) else {}
    except ValueError:
        pass
    detail = body.get("detail")
    if not isinstance(detail, str) or not detail:
        text = response.text.strip()
        detail = text[:500] if text else f"{status} {response.reason_phrase}".strip()
    errors = body.get("errors") if isinstance(body.get("errors"), list) else []
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, str(body.get("title") or response.reason_phrase or status), detail,
               errors=[e for e in errors if isinstance(e, dict)], type=str(body.get("type") or "about:blank"),
               retry_after=retry_after(response), body=body, response=response)
