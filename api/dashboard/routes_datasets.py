"""Datasets: the list with the upload form (``upload.js`` streams the archive to ``POST /v1/datasets`` with a
progress bar and shows the errors it names per file), and a dataset's stats and thumbnail strip."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.dashboard.render import page
from api.dashboard.security import PREFIX
from api.dashboard.session import ViewerDep
from api.deps import LinksDep, SessionDep, SettingsDep, StorageDep, refuse_nul
from api.schemas import DatasetOut
from core.services import datasets
from core.storage.keys import dataset_thumbnails_key

router = APIRouter(prefix=PREFIX, include_in_schema=False)
PAGE_SIZE = 50


@router.get("/datasets")
def datasets_page(request: Request, viewer: ViewerDep, session: SessionDep, settings: SettingsDep,
                  after: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    refuse_nul("after", after)
    result = datasets.list_page(session, tenant_id=viewer.tenant.id, limit=PAGE_SIZE, after=after)
    return page(request, "datasets.html", viewer, datasets=[DatasetOut.of(d) for d in result.data],
                has_more=result.has_more, after=after, max_upload_bytes=settings.max_upload_bytes)


@router.get("/datasets/{dataset_id}")
def dataset_page(request: Request, viewer: ViewerDep, session: SessionDep, storage: StorageDep, links: LinksDep,
                 dataset_id: str) -> Response:
    """Layout, counts, classes, image sizes and the thumbnail strip made at upload (none for older uploads)."""
    dataset = datasets.get(session, tenant_id=viewer.tenant.id, dataset_id=dataset_id)
    key = dataset_thumbnails_key(dataset.id)
    thumbnails = links.url(key) if storage.list(key) else None
    return page(request, "dataset.html", viewer, dataset=DatasetOut.of(dataset), thumbnails=thumbnails)
