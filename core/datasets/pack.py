"""Write the normalised dataset: an uncompressed tar of the validated files plus ``manifest.json``."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from core.datasets.inspection import DatasetInfo

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
    """Pack every file the entries name (paths relative to ``base``) and the manifest into ``out``."""
    files = sorted({e[k] for e in info.entries for k in ("file", "conditioning_file") if k in e})
    payload = json.dumps(manifest(info), indent=1).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        info_member = tarfile.TarInfo(MANIFEST)
        info_member.size = len(payload)
        tar.addfile(info_member, io.BytesIO(payload))
        for name in files:
            tar.add(base / name, arcname=name, recursive=False)
