"""The dashboard's session: the API key in an HttpOnly, SameSite=Strict cookie, a CSRF token per session,
the Origin check, and the signed-in viewer of a page.

The cookie holds ``<nonce>`` before sign-in and ``<nonce>.<base64url(key)>`` after; the nonce is new at
every sign-in. The CSRF token is HMAC-SHA256(secret, nonce): forms carry it in a hidden field, the pages'
JavaScript in the ``X-CSRF-Token`` header. The key is checked like a bearer key (``api.auth.admit``) on
every request, so a revoked key signs the page out and another tenant's ids are 404 here too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.datastructures import FormData
from starlette.requests import HTTPConnection
from starlette.types import Scope

from api.auth import admit
from core.tables import Tenant

COOKIE = "difftune_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
MAX_AGE = 12 * 3600  # seconds a signed-in cookie lives in the browser
STALE = "the form's security token is missing or out of date; reload the page and send it again"


class SignInRequired(Exception):
    """No (valid) key in the cookie: the page redirects to the sign-in form."""

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message


class Forbidden(Exception):
    """A form without the session's CSRF token, or sent from another origin (403)."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class Refused(Exception):
    """The key is over its rate limit or the database is down: the problem ``api.auth.admit`` answered."""

    def __init__(self, response):
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True)
class Cookie:
    """The session cookie: its nonce and, once signed in, the API key."""

    nonce: str
    key: str | None = None

    def encode(self) -> str:
        if self.key is None:
            return self.nonce
        return f"{self.nonce}.{base64.urlsafe_b64encode(self.key.encode()).decode().rstrip('=')}"

    @classmethod
    def decode(cls, value: str | None) -> Cookie | None:
        """The cookie of ``value``; None when absent or malformed."""
        nonce, _, encoded = (value or "").partition(".")
        if not (16 <= len(nonce) <= 64 and nonce.replace("-", "").replace("_", "").isalnum() and nonce.isascii()):
            return None
        if not encoded:
            return cls(nonce)
        try:
            key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (binascii.Error, ValueError):
            return cls(nonce)
        return cls(nonce, key or None)


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def read(connection: HTTPConnection) -> Cookie | None:
    """The session cookie of a request, if any."""
    return Cookie.decode(connection.cookies.get(COOKIE))


def csrf_token(secret: bytes, nonce: str) -> str:
    """The CSRF token of the session ``nonce``."""
    return hmac.new(secret, b"difftune-csrf\0" + nonce.encode(), hashlib.sha256).hexdigest()


def token_ok(secret: bytes, cookie: Cookie | None, token: object) -> bool:
    """Whether ``token`` is the CSRF token of ``cookie``'s session."""
    if cookie is None or not isinstance(token, str) or not token.isascii():
        return False
    return hmac.compare_digest(csrf_token(secret, cookie.nonce), token)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def origin_ok(connection: HTTPConnection) -> bool:
    """A browser's request that changes something came from this site: its ``Origin`` (else ``Referer``)
    is the address it reached us at or ``DIFFTUNE_PUBLIC_URL``. Without either header (not a browser)
    only the token counts."""
    origin = connection.headers.get("origin") or (
        _origin(connection.headers["referer"]) if connection.headers.get("referer") else None)
    if origin is None:
        return True
    own = {_origin(f"{connection.url.scheme}://{connection.headers.get('host', '')}"),
           _origin(connection.app.state.settings.public_url)}
    return origin.lower() in own


def api_credentials(scope: Scope) -> tuple[str | None, str | None]:
    """For ``api.gate.Gate``: (the key of the session cookie, None), or (None, why it is refused) for a
    request that changes something without the CSRF header or from another origin; (None, None) without
    a signed-in cookie."""
    connection = HTTPConnection(scope)
    cookie = read(connection)
    if cookie is None or cookie.key is None:
        return None, None
    if scope["method"] not in SAFE_METHODS:
        if not origin_ok(connection):
            return None, "the request came from another site (Origin); the dashboard's session is not sent"
        if not token_ok(scope["app"].state.csrf_secret, cookie, connection.headers.get(CSRF_HEADER)):
            return None, f"with the dashboard's session cookie, send its CSRF token in {CSRF_HEADER!r}"
    return cookie.key, None


def set_cookie(response, request: Request, cookie: Cookie) -> None:
    """Send ``cookie``: HttpOnly, SameSite=Strict, Secure when the public URL is https."""
    secure = request.app.state.settings.public_url.lower().startswith("https:")
    response.set_cookie(COOKIE, cookie.encode(), max_age=MAX_AGE if cookie.key else None, path="/",
                        httponly=True, samesite="strict", secure=secure)


@dataclass(frozen=True)
class Viewer:
    """Who looks at a page: the key's tenant, the session's CSRF token and the key's first characters."""

    tenant: Tenant
    csrf: str
    key_prefix: str


def current_viewer(request: Request) -> Viewer:
    """The signed-in viewer, checked like a bearer key (``api.auth.admit``); else ``SignInRequired``."""
    cookie = read(request)
    if cookie is None or cookie.key is None:
        raise SignInRequired()
    tenant, refusal = admit(request.app.state, cookie.key, request.url.path)
    if refusal is not None:
        if refusal.status_code == 401:
            raise SignInRequired("that API key is unknown or was revoked; sign in again")
        raise Refused(refusal)
    return Viewer(tenant, csrf_token(request.app.state.csrf_secret, cookie.nonce), cookie.key[:12])


async def verified_form(request: Request) -> FormData:
    """The posted form, once its CSRF token and origin are checked (``Forbidden`` otherwise)."""
    form = await request.form(max_files=0, max_fields=200)
    if not origin_ok(request):
        raise Forbidden("the form was sent from another site (its Origin is not this dashboard's)")
    if not token_ok(request.app.state.csrf_secret, read(request), form.get(CSRF_FIELD)):
        raise Forbidden(STALE)
    return form


ViewerDep = Annotated[Viewer, Depends(current_viewer)]
FormDep = Annotated[FormData, Depends(verified_form)]
