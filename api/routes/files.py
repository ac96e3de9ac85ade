"""``/v1/files/{key}``: downloads from the local directory store through signed, expiring links."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from api.deps import StorageDep
from api.problems import problem
from core.storage import LocalStorage, StorageError

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.get("/{key:path}", summary="Download an object (link from a checkpoint or sample listing)")
def download(
    storage: StorageDep, key: str, expires: Annotated[int, Query()], signature: Annotated[str, Query()]
):
    if not isinstance(storage, LocalStorage):
        return problem(404, "downloads are served by S3 presigned URLs in this deployment")
    if not storage.verify(key, expires, signature):
        return problem(403, "the download link is invalid or has expired", errors=[{"field": "signature"}])
    try:
        path = storage.path_of(key)
    except StorageError:
        return problem(404, f"no object {key!r}")
    if not path.is_file():
        return problem(404, f"no object {key!r}")
    return FileResponse(path)
