"""Errors raised by services; the API maps each to an RFC 9457 problem."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every expected, user-facing error."""

    title = "Request failed"
    retry_after: int | None = None  # seconds after which the same request may succeed (Retry-After)

    def __init__(self, detail: str, *, errors: list[dict[str, str]] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class NotFoundError(ServiceError):
    """The resource does not exist or belongs to another tenant."""

    title = "Not found"

    def __init__(self, kind: str, resource_id: str):
        super().__init__(f"no {kind} with id {resource_id!r}")
        self.kind, self.resource_id = kind, resource_id


class ConflictError(ServiceError):
    """The request conflicts with the resource's current state."""

    title = "Conflict"


class InvalidError(ServiceError):
    """A field of the request is invalid; ``errors`` name each field."""

    title = "Invalid request"

    @classmethod
    def field(cls, field: str, message: str) -> InvalidError:
        """An error about one field."""
        return cls(f"{field}: {message}", errors=[{"field": field, "message": message}])


class UploadRejected(ServiceError):
    """An uploaded archive is unsafe or malformed; ``file`` names the member at fault."""

    title = "Upload rejected"

    def __init__(self, detail: str, *, file: str | None = None, too_large: bool = False):
        errors = [{"file": file, "message": detail}] if file else []
        super().__init__(f"{file}: {detail}" if file else detail, errors=errors)
        self.file, self.too_large = file, too_large


class QuotaExceeded(ServiceError):
    """The tenant (or its API key) is at one of its limits; the request may succeed later."""

    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int = 30):
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))


class Busy(ServiceError):
    """The service is at capacity for this kind of request; retry after ``retry_after`` seconds."""

    title = "Service busy"

    def __init__(self, detail: str, *, retry_after: int = 5):
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))
