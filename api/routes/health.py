"""Liveness and readiness."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.problems import problem
from core.queue import check_broker

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _probe(check: Callable[[], object]) -> dict[str, object]:
    start = time.perf_counter()
    try:
        check()
        return {"ok": True, "ms": round((time.perf_counter() - start) * 1000, 1)}
    except Exception as err:  # noqa: BLE001 - any failure means not ready
        # The public answer names the kind of failure only; hosts, ports and paths go to the log.
        log.warning("readiness check failed: %s: %s", type(err).__name__, err)
        return {"ok": False, "error": type(err).__name__}


@router.get("/readyz", summary="Database, broker and storage are reachable")
def readyz(request: Request) -> JSONResponse:
    state = request.app.state

    def database() -> None:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    checks = {
        "database": _probe(database),
        "broker": _probe(lambda: check_broker(state.celery)),
        "storage": _probe(state.storage.check),
    }
    if all(c["ok"] for c in checks.values()):
        return JSONResponse({"status": "ok", "checks": checks})
    failing = ", ".join(name for name, c in checks.items() if not c["ok"])
    return problem(503, f"not ready: {failing} unavailable", checks=checks)
