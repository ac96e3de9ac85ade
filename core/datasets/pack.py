"""Write the normalised dataset once, as the library reads it: an uncompressed tar of the validated
files at their normalised paths, a normalised ``metadata.jsonl`` for captioned data, and
``manifest.json`` (layout, classes, entries, stats)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from contract.families import DatasetLayout
from core.datasets.inspection import FILE_FIELDS, METADATA, DatasetInfo

MANIFEST = "manifest.json"


def manifest(info: DatasetInfo) -> dict[str, Any]:
    """The manifest the worker reads: layout, classes, entries and stats."""
    return {
        "version": 1,
        "layout": info.layout,
        "classes": info.classes,
        "entries": info.entries,
        "stats": info.stats,
    }


def write_tar(base: Path, info: DatasetInfo, out: Path) -> None:
    """Pack every file the entries name (paths relative to ``base``), the manifest and, for captioned
    data, the normalised ``metadata.jsonl`` (one entry per line, the upload's own lines dropped)."""
    files = sorted({e[k] for e in info.entries for k in FILE_FIELDS if k in e})
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MANIFEST, json.dumps(manifest(info), indent=1).encode())
        if info.layout == DatasetLayout.METADATA:
            _add_bytes(tar, METADATA, "".join(json.dumps(e) + "\n" for e in info.entries).encode())
        for name in files:
            tar.add(base / name, arcname=name, recursive=False)


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(payload)
    tar.addfile(member, io.BytesIO(payload))
