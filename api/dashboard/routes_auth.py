"""Sign-in with an API key (checked like a bearer key) and sign-out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from api.auth import admit
from api.dashboard.errors import problem_detail
from api.dashboard.render import page
from api.dashboard.security import PREFIX
from api.dashboard.session import Cookie, FormDep, csrf_token, new_nonce, read, set_cookie

router = APIRouter(prefix=PREFIX, include_in_schema=False)
HOME = f"{PREFIX}/jobs"


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another site)."""
    if not target or not target.startswith(PREFIX + "/") or target.startswith("//") or "\\" in target:
        return HOME
    return target


def _form(request: Request, cookie: Cookie, *, status: int = 200, next_url: str = HOME, message: str = "",
          error: str = "") -> Response:
    response = page(request, "sign_in.html", None, code=status, next_url=next_url, message=message, error=error,
                    csrf=csrf_token(request.app.state.csrf_secret, cookie.nonce))
    set_cookie(response, request, cookie)
    return response


@router.get("/sign-in")
def sign_in_form(request: Request, next: Annotated[str | None, Query(max_length=2000)] = None,
                 message: Annotated[str, Query(max_length=200)] = "") -> Response:
    """The sign-in form; starts an anonymous session (its nonce protects the form itself)."""
    cookie = read(request) or Cookie(new_nonce())
    return _form(request, Cookie(cookie.nonce), next_url=safe_next(next), message=message)


@router.post("/sign-in")
def sign_in(request: Request, form: FormDep) -> Response:
    """Check the key as the REST API does; on success a new session (new nonce) holds it."""
    key = str(form.get("api_key") or "").strip()
    next_url = safe_next(str(form.get("next") or ""))
    cookie = read(request) or Cookie(new_nonce())
    if not key:
        return _form(request, cookie, status=422, next_url=next_url, error="api_key: enter an API key")
    tenant, refusal = admit(request.app.state, key, request.url.path)
    if refusal is not None:
        return _form(request, cookie, status=refusal.status_code, next_url=next_url,
                     error=f"api_key: {problem_detail(refusal)}")
    response = RedirectResponse(next_url, status_code=303)
    set_cookie(response, request, Cookie(new_nonce(), key))
    return response


@router.post("/sign-out")
def sign_out(request: Request, form: FormDep) -> Response:
    """Forget the key: the cookie goes back to an anonymous session."""
    response = RedirectResponse(f"{PREFIX}/sign-in?message=signed+out", status_code=303)
    set_cookie(response, request, Cookie(new_nonce()))
    return response
