"""Where a tenant's base model may come from, checked before it is registered.

- ``local``: a folder under one of the operator's ``DIFFTUNE_MODEL_ROOTS`` (none by default);
- ``s3``: a prefix under one of ``DIFFTUNE_MODEL_S3_PREFIXES`` (none by default);
- ``hub``: a Hugging Face repository;
- ``checkpoint``: a checkpoint of one of the tenant's own jobs (chaining work without storage access);
- ``upload``: an archive uploaded through the API (``base_models.create_from_archive``).

The service's own storage area and cache (other tenants' datasets and checkpoints) are never
allowed, and the answer depends only on the location's text and the tenant's own rows, never on
whether a path or object exists, so registration cannot be used to probe the workers' disks.
"""

from __future__ import annotations

import posixpath
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.enums import JobKind
from core.errors import InvalidError
from core.services.common import referenced
from core.settings import Settings, parse_storage_url
from core.tables import Checkpoint, Job, RegisteredModel

UPLOAD = "upload"
CHECKPOINT = "checkpoint"


def _within(path: PurePosixPath, root: PurePosixPath) -> bool:
    return path == root or root in path.parents


def _local(location: dict[str, Any], settings: Settings) -> dict[str, Any]:
    raw = str(location.get("path", ""))
    normal = PurePosixPath(posixpath.normpath(raw))
    if not raw.startswith("/") or ".." in PurePosixPath(raw).parts:
        raise InvalidError.field("location.path", "must be an absolute path without '..'")
    own = [PurePosixPath(settings.cache_dir.resolve())]
    if settings.storage.scheme == "file":
        own.append(PurePosixPath(settings.storage.path))
    roots = [PurePosixPath(root) for root in settings.model_roots]
    if any(_within(normal, area) for area in own) or not any(_within(normal, root) for root in roots):
        allowed = ", ".join(str(r) for r in roots) or "none: this service does not accept local locations"
        raise InvalidError.field("location.path", f"is not under a model root this service allows ({allowed}; "
                                 "DIFFTUNE_MODEL_ROOTS); upload the model or name one of your job's checkpoints")
    return {"kind": "local", "path": str(normal)}


def _s3(location: dict[str, Any], settings: Settings) -> dict[str, Any]:
    uri = str(location.get("uri", ""))
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    key = posixpath.normpath("/" + key).lstrip("/") if key else ""
    if ".." in key.split("/"):
        raise InvalidError.field("location.uri", "must not contain '..'")

    def under(prefix_uri: str) -> bool:
        allowed = parse_storage_url(prefix_uri)
        return allowed.bucket == bucket and (not allowed.prefix or key == allowed.prefix
                                             or key.startswith(allowed.prefix.rstrip("/") + "/"))

    own = settings.storage.scheme == "s3" and under(f"s3://{settings.storage.bucket}/{settings.storage.prefix}")
    if own or not any(under(prefix) for prefix in settings.model_s3_prefixes):
        allowed = ", ".join(settings.model_s3_prefixes) or "none: this service does not accept s3 locations"
        raise InvalidError.field("location.uri", f"is not under an S3 prefix this service allows ({allowed}; "
                                 "DIFFTUNE_MODEL_S3_PREFIXES); upload the model or name one of your job's checkpoints")
    return {"kind": "s3", "uri": f"s3://{bucket}/{key}".rstrip("/")}


def _checkpoint(session: Session, location: dict[str, Any], *, tenant_id: str, family: str) -> dict[str, Any]:
    job = referenced(session, Job, str(location.get("job_id", "")), tenant_id=tenant_id, kind="job",
                     field="location.job_id")
    if job.kind != JobKind.TUNE:
        raise InvalidError.field("location.job_id", f"{job.id} is a {job.kind} job; name a tuning job")
    model = session.get(RegisteredModel, job.base_model_id) if job.base_model_id else None
    if model is None or model.family != family:
        raise InvalidError.field("family", f"job {job.id} tuned a {model.family if model else 'deleted'} model, "
                                 f"not {family}")
    steps = list(session.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job.id).order_by(Checkpoint.step)))
    step = location.get("step")
    if not steps or (step is not None and step not in steps):
        have = f"it has {', '.join(map(str, steps))}" if steps else "it has none yet"
        raise InvalidError.field("location.step", f"job {job.id} has no published checkpoint at step {step} ({have})"
                                 if step is not None else f"job {job.id} has no published checkpoint ({have})")
    return {"kind": CHECKPOINT, "job_id": job.id, "step": step if step is not None else steps[-1]}


def scoped(session: Session, location: dict[str, Any], *, settings: Settings, tenant_id: str,
           family: str) -> dict[str, Any]:
    """The location to store for a registration, or ``InvalidError`` naming the field at fault."""
    kind = location.get("kind")
    if kind == "local":
        return _local(location, settings)
    if kind == "s3":
        return _s3(location, settings)
    if kind == CHECKPOINT:
        return _checkpoint(session, location, tenant_id=tenant_id, family=family)
    if kind == "hub":
        return location
    raise InvalidError.field("location.kind", f"unknown kind {kind!r}")


def pinned_steps(session: Session, *, job_id: str) -> set[int]:
    """Checkpoint steps of ``job_id`` that registered base models start from (never pruned)."""
    tenant_id = select(Job.tenant_id).where(Job.id == job_id).scalar_subquery()
    rows = session.scalars(select(RegisteredModel.location).where(RegisteredModel.tenant_id == tenant_id))
    return {int(loc["step"]) for loc in rows if loc and loc.get("kind") == CHECKPOINT and loc.get("job_id") == job_id}
