"""Errors on dashboard pages: the same statuses and messages as the REST API's problems, as HTML pages;
a page without a signed-in session redirects to the sign-in form."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from api.dashboard.render import page
from api.dashboard.security import PREFIX
from api.dashboard.session import Forbidden, Refused, SignInRequired
from core.errors import ServiceError
from core.storage import StorageError

KEPT_HEADERS = ("retry-after", "allow")


def is_page(request: Request) -> bool:
    """Whether ``request`` is for a dashboard page (not its static files)."""
    path = request.url.path
    return (path == PREFIX or path.startswith(PREFIX + "/")) and not path.startswith(PREFIX + "/static/")


def sign_in_redirect(request: Request, message: str = "") -> RedirectResponse:
    """303 to the sign-in form, coming back here (GET pages) afterwards."""
    query = {"next": request.url.path + (f"?{request.url.query}" if request.url.query else "")}
    if request.method != "GET":
        query = {}
    if message:
        query["message"] = message
    return RedirectResponse(f"{PREFIX}/sign-in?{urlencode(query)}", status_code=303)


def error_page(request: Request, status: int, detail: str, *, title: str = "", errors=None,
               headers: dict[str, str] | None = None) -> Response:
    """The error page of ``status`` with the problem's ``detail`` and ``errors``."""
    response = page(request, "error.html", None, code=status, status_code=status, title=title or "Error",
                    detail=detail, errors=errors or [])
    for name, value in (headers or {}).items():
        if name.lower() in KEPT_HEADERS:
            response.headers[name] = value
    return response


def problem_detail(problem: Response) -> str:
    """The ``detail`` of a problem+json response."""
    return json.loads(bytes(problem.body)).get("detail", "")


def from_problem(request: Request, problem: Response) -> Response:
    """An HTML page with what a problem+json response says."""
    body = json.loads(bytes(problem.body))
    return error_page(request, problem.status_code, body.get("detail", ""), title=body.get("title", ""),
                      errors=body.get("errors"), headers=dict(problem.headers))


def _pages_as_html(original):
    """A handler answering ``original``'s problem as a page on dashboard paths, and as it is elsewhere."""

    async def handler(request: Request, err: Exception) -> Response:
        response = original(request, err)
        if not is_page(request):
            return response
        return from_problem(request, response)

    return handler


def install(app: FastAPI) -> None:
    """Register the dashboard's handlers (after ``api.problems.install``)."""
    for kind in (ServiceError, RequestValidationError, HTTPException, StorageError, DBAPIError, Exception):
        app.add_exception_handler(kind, _pages_as_html(app.exception_handlers[kind]))

    async def sign_in(request: Request, err: SignInRequired) -> Response:
        return sign_in_redirect(request, err.message)

    async def forbidden(request: Request, err: Forbidden) -> Response:
        return error_page(request, 403, err.detail, title="Forbidden")

    async def refused(request: Request, err: Refused) -> Response:
        return from_problem(request, err.response)

    app.add_exception_handler(SignInRequired, sign_in)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(Refused, refused)
