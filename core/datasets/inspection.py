"""Recognise a dataset's layout and check every image: class folders or HF ``metadata.jsonl``."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from contract.buckets import bucket_report
from core.errors import UploadRejected

DEFAULT_BUCKETS = {"resolution": 1024, "bucket_step": 64, "bucket_max_aspect": 2.0}  # SDXL's and Flux's native

METADATA = "metadata.jsonl"
FILE_FIELDS = ("file_name", "conditioning_file_name")  # entry fields that name a file of the dataset


@dataclass
class DatasetInfo:
    """What validation learned: the layout, classes, one entry per example and summary stats.

    Entries use the library's names: ``{"file_name", "label"}`` for class folders and the
    ``metadata.jsonl`` fields ``{"file_name", "text"[, "conditioning_file_name"]}`` for captions.
    """

    layout: str  # class_folders | metadata
    entries: list[dict[str, Any]]
    classes: list[str] | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def _strip_common_folder(files: list[str]) -> tuple[str, list[str]]:
    """Drop one top folder that wraps everything (``flowers/daisy/1.png``), when that is unambiguous."""
    tops = {f.split("/", 1)[0] for f in files}
    if len(tops) != 1 or any("/" not in f for f in files):
        return "", files
    top = tops.pop()
    inner = [f.split("/", 1)[1] for f in files]
    if METADATA in inner or all("/" in f for f in inner):
        return top + "/", inner
    return "", files


@dataclass
class _ImageCheck:
    """Decodes each image once, after refusing one whose header declares over ``max_pixels``."""

    root: Path
    max_pixels: int | None = None
    sizes: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)
    image_sizes: Counter = field(default_factory=Counter)  # of the training images (not their controls)

    def __call__(self, name: str, *, control: bool = False) -> None:
        size = _check_image(self.root, name, self.sizes, self.modes, self.max_pixels)
        if not control:
            self.image_sizes[size] += 1


def _check_image(root: Path, name: str, sizes: Counter, modes: Counter, max_pixels: int | None) -> tuple[int, int]:
    try:
        with Image.open(root / name) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise UploadRejected(f"is {width}x{height} = {width * height} pixels; images may have at most "
                                     f"{max_pixels} (DIFFTUNE_MAX_IMAGE_PIXELS)", file=name)
            image.load()
            sizes[image.size] += 1
            modes[image.mode] += 1
            return image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = str(err).replace(str(root / name), name).replace(str(root), "")  # no server paths
        raise UploadRejected(f"not a readable image ({reason})", file=name) from None


def _size_stats(check: _ImageCheck) -> dict[str, Any]:
    """Smallest and largest sides, colour modes, the training images' sizes ({"WxH": count}) and their
    aspect-ratio bucket histogram at the common 1024 px settings (``GET .../buckets`` for others)."""
    widths = [w for w, _ in check.sizes]
    heights = [h for _, h in check.sizes]
    images = list(check.image_sizes.elements())
    return {
        "min_width": min(widths),
        "max_width": max(widths),
        "min_height": min(heights),
        "max_height": max(heights),
        "modes": dict(check.modes),
        "image_sizes": {f"{w}x{h}": n for (w, h), n in sorted(check.image_sizes.items())},
        "aspect_buckets": bucket_report(images, **DEFAULT_BUCKETS),
    }


def _class_folders(check: _ImageCheck, files: list[str]) -> DatasetInfo:
    per_class: Counter = Counter()
    for name in files:
        if "/" not in name:
            raise UploadRejected(
                f"is not inside a class folder (or add a {METADATA} for captioned data)", file=name
            )
        per_class[name.split("/", 1)[0]] += 1
        check(name)
    classes = sorted(per_class)
    index = {c: i for i, c in enumerate(classes)}
    entries = [{"file_name": f, "label": index[f.split("/", 1)[0]]} for f in sorted(files)]
    stats = {"images_per_class": dict(sorted(per_class.items())), **_size_stats(check)}
    return DatasetInfo("class_folders", entries, classes, stats)


def _metadata_line(line: str, number: int, present: set[str]) -> dict[str, Any]:
    where = f"{METADATA}:{number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise UploadRejected(f"malformed JSON ({err.msg})", file=where) from None
    if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
        raise UploadRejected("needs a string 'file_name'", file=where)
    if not isinstance(row.get("text"), str):
        raise UploadRejected("needs a string 'text'", file=where)
    entry = {"file_name": row["file_name"], "text": row["text"]}
    if "conditioning_file_name" in row:
        if not isinstance(row["conditioning_file_name"], str):
            raise UploadRejected("'conditioning_file_name' must be a string", file=where)
        entry["conditioning_file_name"] = row["conditioning_file_name"]
    for key in FILE_FIELDS:
        if key in entry and entry[key] not in present:
            raise UploadRejected(f"refers to {entry[key]!r}, which is not in the archive", file=where)
    return entry


def _metadata(check: _ImageCheck, files: list[str]) -> DatasetInfo:
    present = set(files)
    lines = (check.root / METADATA).read_text(encoding="utf-8", errors="replace").splitlines()
    entries: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        entry = _metadata_line(line, n, present)
        if (first := first_line.setdefault(entry["file_name"], n)) != n:
            raise UploadRejected(f"lists {entry['file_name']!r} again (first on line {first})", file=f"{METADATA}:{n}")
        entries.append(entry)  # unique and present in the archive: never more entries than files
    if not entries:
        raise UploadRejected("lists no images", file=METADATA)
    conditioned = sum("conditioning_file_name" in e for e in entries)
    if 0 < conditioned < len(entries):
        raise UploadRejected("either every line or none has 'conditioning_file_name'", file=METADATA)
    for entry in entries:
        for key in FILE_FIELDS:
            if key in entry:
                check(entry[key], control=key != "file_name")
    stats = {"conditioning": bool(conditioned), **_size_stats(check)}
    return DatasetInfo("metadata", entries, None, stats)


def inspect(root: Path, files: list[str], *, max_pixels: int | None = None) -> DatasetInfo:
    """Validate the files extracted under ``root``; ``UploadRejected`` names the first bad one.
    A metadata.jsonl lists each image once, so it never names more examples than the archive's
    (counted and limited) files; no image over ``max_pixels`` is decoded."""
    if not files:
        raise UploadRejected("the archive contains no files")
    prefix, names = _strip_common_folder(sorted(files))
    base = root / prefix if prefix else root
    check = _ImageCheck(base, max_pixels)
    info = _metadata(check, names) if METADATA in names else _class_folders(check, names)
    info.stats["root"] = prefix
    return info
