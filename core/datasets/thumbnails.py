"""A strip of small square thumbnails of a dataset's images, made once at upload for the dashboard."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

SIZE = 64  # pixels of each thumbnail's side
COUNT = 12  # thumbnails in the strip


def pick(entries: list[dict[str, Any]], count: int = COUNT) -> list[str]:
    """Up to ``count`` image names, taking the classes in turn (the first images of a captioned set)."""
    by_label: dict[Any, list[str]] = {}
    for entry in entries:
        by_label.setdefault(entry.get("label"), []).append(entry["file_name"])
    columns = list(by_label.values())
    picked: list[str] = []
    for row in range(max((len(c) for c in columns), default=0)):
        picked += [column[row] for column in columns if row < len(column)]
        if len(picked) >= count:
            break
    return picked[:count]


def strip_png(base: Path, entries: list[dict[str, Any]], *, count: int = COUNT, size: int = SIZE) -> bytes:
    """One PNG of the picked images side by side, each centre-cropped to ``size`` px (already validated)."""
    names = pick(entries, count)
    strip = Image.new("RGB", (size * max(1, len(names)), size), (255, 255, 255))
    for i, name in enumerate(names):
        with Image.open(base / name) as image:
            image.draft("RGB", (size * 2, size * 2))  # JPEG: decode at a reduced scale
            rgba = image.convert("RGBA")  # transparency composited on white, as training does
            flat = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
            strip.paste(ImageOps.fit(flat, (size, size)), (i * size, 0))
    out = io.BytesIO()
    strip.save(out, format="PNG", optimize=True)
    return out.getvalue()
