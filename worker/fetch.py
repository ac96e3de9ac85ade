"""Bring a job's inputs to the worker's disk: the dataset and the base model (cached)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from contract.outputs import step_name
from core.storage import S3Storage, StorageError
from core.storage.keys import base_model_prefix, checkpoint_prefix, dataset_archive_key
from core.tables import Dataset, RegisteredModel
from worker.context import WorkerContext

READY = ".ready"


class InputError(ValueError):
    """A job's dataset or base model cannot be used; the message says which and why."""


def _publish_dir(tmp: Path, final: Path) -> Path:
    (tmp / READY).write_text("ok")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def fetch_dataset(ctx: WorkerContext, dataset: Dataset) -> Path:
    """The dataset's files as a local folder, as core normalised them (class folders, or images
    with ``metadata.jsonl``): the library reads it as it is.

    The cached copy is ``datasets/{id}/files/`` with the upload's ``manifest.json`` beside it.
    """
    final = ctx.cache_dir / "datasets" / dataset.id
    if (final / READY).exists():
        return final / "files"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset.id}.", dir=final.parent))
    try:
        archive = tmp / "data.tar"
        ctx.storage.get_file(dataset_archive_key(dataset.id), archive)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp / "files", filter="data")
        archive.unlink()
        manifest = tmp / "files" / "manifest.json"
        if manifest.exists():
            os.replace(manifest, tmp / "manifest.json")
        return _publish_dir(tmp, final) / "files"
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _download_s3_prefix(ctx: WorkerContext, uri: str, dest: Path) -> None:
    settings = ctx.settings
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    store = S3Storage(bucket=bucket, prefix="", endpoint_url=settings.s3_endpoint,
                      access_key=settings.s3_access_key,
                      secret_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
                      region=settings.s3_region)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    if not store.download_prefix(prefix, dest):
        raise InputError(f"base_model: nothing found under {uri}")


def _cached_copy(ctx: WorkerContext, name: str, download) -> str:
    """``download(folder)`` once into the worker's model cache under ``name``; the cached folder."""
    final = ctx.cache_dir / "base_models" / name
    if not (final / READY).exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".model.", dir=final.parent))
        try:
            download(tmp)
            _publish_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return str(final)


def _download_stored(ctx: WorkerContext, prefix: str, what: str, dest: Path) -> None:
    """Objects under one of the service's own prefixes (an uploaded model, a job's checkpoint)."""
    if not ctx.storage.download_prefix(prefix, dest):
        raise InputError(f"base_model: {what} is no longer stored")


def _download_hub(ctx: WorkerContext, repo_id: str, revision: str | None) -> str:
    """A local snapshot of a hub repository at ``revision`` (its default branch when None), cached
    under the worker's cache. A missing repository or revision fails the job; an outage is retried."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        return snapshot_download(repo_id, revision=revision, cache_dir=ctx.cache_dir / "hub")
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as err:
        raise InputError(f"base_model: {where} is not available on the hub ({type(err).__name__})") from None
    except LocalEntryNotFoundError:
        raise InputError(f"base_model: {where} is not in the worker's hub cache and the hub cannot be "
                         "reached (offline)") from None


def fetch_base_model(ctx: WorkerContext, base_model: RegisteredModel) -> str:
    """A local folder that the model family can ``from_pretrained`` (S3 and hub copies are cached)."""
    location = base_model.location or {}
    kind = location.get("kind")
    if kind == "local":
        path = Path(location.get("path", ""))
        if not (path / "model_index.json").exists():
            raise InputError(f"base_model: {path} is not a diffusers folder on this worker")
        return str(path)
    if kind == "hub":
        return _download_hub(ctx, str(location["repo_id"]), location.get("revision"))
    if kind == "s3":
        uri = str(location.get("uri", ""))

        def download(dest: Path) -> None:
            try:
                _download_s3_prefix(ctx, uri, dest)
            except StorageError as err:
                raise InputError(f"base_model: cannot download {uri}: {err}") from err

        return _cached_copy(ctx, hashlib.sha256(uri.encode()).hexdigest()[:24], download)
    if kind == "upload":
        return _cached_copy(ctx, base_model.id, lambda dest: _download_stored(
            ctx, base_model_prefix(base_model.id), f"the upload of {base_model.id}", dest))
    if kind == "checkpoint":
        job_id, step = str(location["job_id"]), int(location["step"])
        return _cached_copy(ctx, f"{job_id}-{step_name(step)}", lambda dest: _download_stored(
            ctx, checkpoint_prefix(job_id, step), f"checkpoint step {step} of job {job_id}", dest))
    raise InputError(f"base_model: unknown location kind {kind!r}")
