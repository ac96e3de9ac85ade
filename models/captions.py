"""Text-to-image datasets: ``metadata.jsonl`` (``file_name``, ``text``[, ``conditioning_file_name``])
or ``.txt`` caption side-cars next to each image, validated before any model is loaded.

Every problem names its file (and line of metadata.jsonl), all at once, as for class folders. A
conditioning image must have the same size as its image, so both crop to the same pixels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from contract import buckets
from contract.buckets import Size
from contract.train_config import TrainConfig
from models.data import IMAGE_SUFFIXES, DatasetError, _check_image, _is_hidden

METADATA = "metadata.jsonl"


@dataclass(frozen=True)
class CaptionFolder:
    """Validated captioned images, with optional conditioning (control) images."""

    root: Path
    files: list[Path]
    captions: list[str]
    controls: list[Path] | None = None
    sizes: list[Size] | None = None  # each row's aspect-ratio bucket (height, width); None: square

    def __len__(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> list[int]:
        """Row i's caption id in a prompt table whose row 0 is the empty prompt."""
        return list(range(1, len(self.files) + 1))

    @property
    def class_names(self) -> list[str]:
        return []

    def fingerprint(self) -> str:
        """sha256 of every image's path, caption and bytes (and its control image's)."""
        h = hashlib.sha256()
        for i, (path, caption) in enumerate(zip(self.files, self.captions, strict=True)):
            h.update(f"{path.relative_to(self.root)}:{caption}:".encode())
            h.update(path.read_bytes())
            if self.controls:
                h.update(self.controls[i].read_bytes())
        return h.hexdigest()


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as img:
            return img.size
    except OSError:
        return None


def _read_metadata(root: Path, problems: list[str]) -> list[tuple[str, str, str | None]]:
    """(file_name, text, conditioning_file_name) per valid line of metadata.jsonl."""
    rows, meta = [], root / METADATA
    for n, line in enumerate(meta.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{meta}:{n}: not valid JSON ({err.msg})")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
            problems.append(f"{meta}:{n}: needs a string 'file_name'")
            continue
        if not isinstance(row.get("text"), str):
            problems.append(f"{meta}:{n}: needs a string 'text' caption for {row['file_name']!r}")
            continue
        control = row.get("conditioning_file_name")
        if control is not None and not isinstance(control, str):
            problems.append(f"{meta}:{n}: 'conditioning_file_name' must be a string")
            continue
        rows.append((row["file_name"], row["text"], control))
    if not rows and not problems:
        problems.append(f"{meta}: no entries")
    return rows


def _read_sidecars(root: Path, problems: list[str]) -> list[tuple[str, str, str | None]]:
    """(file_name, text, None) for each image with a ``.txt`` caption beside it."""
    rows = []
    images = sorted(p for p in root.rglob("*") if p.is_file() and not _is_hidden(p)
                    and p.suffix.lower() in IMAGE_SUFFIXES)
    for image in images:
        side = image.with_suffix(".txt")
        if not side.is_file():
            problems.append(f"{image}: no caption (expected {side.name} beside it, or a {METADATA})")
            continue
        rows.append((str(image.relative_to(root)), side.read_text(errors="replace").strip(), None))
    if not images:
        problems.append(f"{root}: no images (expected a {METADATA} or images with .txt captions)")
    return rows


def scan_caption_folder(root: str | Path, *, resolution: int, upscale_small_images: bool = False,
                        require_conditioning: bool = False) -> CaptionFolder:
    """List and validate a captioned dataset; raise ``DatasetError`` naming every bad file."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError([f"{root}: dataset folder does not exist"])
    problems: list[str] = []
    has_meta = (root / METADATA).is_file()
    rows = _read_metadata(root, problems) if has_meta else _read_sidecars(root, problems)
    files, captions, controls = [], [], []
    for name, text, control in rows:
        path = root / name
        if not path.is_file():
            problems.append(f"{path}: listed in {METADATA} but missing")
            continue
        if problem := _check_image(path, resolution, upscale_small_images):
            problems.append(problem)
            continue
        if control is None:
            if require_conditioning:
                problems.append(f"{path}: no conditioning_file_name in {METADATA}")
            files.append(path)
            captions.append(text)
            continue
        cpath = root / control
        if not cpath.is_file():
            problems.append(f"{cpath}: conditioning image of {name} is missing")
        elif problem := _check_image(cpath, resolution, upscale_small_images):
            problems.append(problem)
        elif (a := _image_size(path)) != (b := _image_size(cpath)):
            problems.append(f"{cpath}: conditioning image is {b[0]}x{b[1]} but {name} is {a[0]}x{a[1]}; "
                            "they must be the same size")
        else:
            files.append(path)
            captions.append(text)
            controls.append(cpath)
    if controls and len(controls) != len(files) and not problems:
        problems.append(f"{root / METADATA}: give conditioning_file_name for every image or for none")
    if problems:
        raise DatasetError(problems)
    return CaptionFolder(root=root, files=files, captions=captions, controls=controls or None)


def with_buckets(folder: CaptionFolder, config: TrainConfig) -> CaptionFolder:
    """The folder with each image's bucket (``aspect_buckets``); an image smaller than its bucket is a
    problem naming it unless ``upscale_small_images``."""
    image_sizes = [_image_size(path) for path in folder.files]  # (width, height), all readable
    sizes = buckets.assign(image_sizes, config.resolution, config.bucket_step, config.bucket_max_aspect)
    problems = [f"{path}: image is {w}x{h}, smaller than its {size[1]}x{size[0]} aspect-ratio bucket; use larger "
                "images or set upscale_small_images: true"
                for path, (w, h), size in zip(folder.files, image_sizes, sizes, strict=True)
                if not buckets.covers(w, h, size)]
    if problems and not config.upscale_small_images:
        raise DatasetError(problems)
    return replace(folder, sizes=sizes)
