"""Target datasets: an image folder with one sub-folder per class, validated before training.

Every problem is reported with the file it concerns, all at once, before any model is loaded.
Images are converted to RGB (grayscale expanded, transparency composited on white) and
center-cropped to the training resolution as in DiT (ADM's ``center_crop_arr``), or fitted to their
aspect-ratio bucket (``contract/buckets.py``). Images smaller
than the resolution are rejected unless ``upscale_small_images`` is set, because silently
upscaled images teach the model blur.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from contract.buckets import Size, crop_geometry

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
MAX_LISTED_PROBLEMS = 20


class DatasetError(ValueError):
    """The dataset cannot be used; the message names each offending file or folder."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        text = "\n  ".join(shown) + (f"\n  ... and {more} more" if more else "")
        super().__init__(f"dataset has {len(problems)} problem(s):\n  {text}")


@dataclass(frozen=True)
class ImageFolder:
    """A validated class-conditional image folder: files, integer labels and class names."""

    root: Path
    files: list[Path]
    labels: list[int]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """sha256 of every file's relative path, label and bytes."""
        h = hashlib.sha256()
        for path, label in zip(self.files, self.labels, strict=True):
            h.update(f"{path.relative_to(self.root)}:{label}:".encode())
            h.update(path.read_bytes())
        return h.hexdigest()


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name.startswith("__")


def _check_image(path: Path, resolution: int, upscale: bool) -> str | None:
    """None if the file is a usable image, else a problem description naming it."""
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            width, height = img.size
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"{path}: not a readable image ({type(err).__name__}: {err})"
    if min(width, height) < resolution and not upscale:
        return (f"{path}: image is {width}x{height}, smaller than the training resolution {resolution}; "
                "use larger images or set upscale_small_images: true")
    return None


def scan_image_folder(root: str | Path, *, resolution: int, upscale_small_images: bool = False) -> ImageFolder:
    """List and validate a class-folder dataset; raise ``DatasetError`` naming every bad file."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError([f"{root}: dataset folder does not exist"])
    problems: list[str] = []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p))
    for stray in sorted(p for p in root.iterdir() if p.is_file() and not _is_hidden(p)):
        problems.append(f"{stray}: file outside a class folder (expected ROOT/<class>/<image>)")
    if not class_dirs:
        problems.append(f"{root}: no class sub-folders (expected ROOT/<class>/<image>)")
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        members = sorted(p for p in class_dir.rglob("*") if p.is_file() and not _is_hidden(p))
        if not members:
            problems.append(f"{class_dir}: class folder is empty")
        for path in members:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                problems.append(f"{path}: not an image file (suffix {path.suffix or 'none'!r})")
                continue
            problem = _check_image(path, resolution, upscale_small_images)
            if problem:
                problems.append(problem)
                continue
            files.append(path)
            labels.append(label)
    if problems:
        raise DatasetError(problems)
    return ImageFolder(root=root, files=files, labels=labels, class_names=[d.name for d in class_dirs])


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB view of any PIL image; transparency is composited on white."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def fit_crop(img: Image.Image, size: Size) -> Image.Image:
    """Fit an image to ``size`` (height, width) as ``contract.buckets.crop_geometry`` computes: halve with
    BOX while large, resize with BICUBIC to cover, crop the centre."""
    target_h, target_w = size
    while img.width >= 2 * target_w and img.height >= 2 * target_h:
        img = img.resize((img.width // 2, img.height // 2), resample=Image.BOX)
    width, height, top, left = crop_geometry(img.width, img.height, size)
    img = img.resize((width, height), resample=Image.BICUBIC)
    return Image.fromarray(np.asarray(img)[top : top + target_h, left : left + target_w])


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """ADM/DiT center crop to a ``size`` square (``fit_crop`` to a square bucket)."""
    return fit_crop(img, (size, size))


def load_image(path: Path, size: int | Size) -> torch.Tensor:
    """An image file as a (3, H, W) float tensor in [-1, 1], fitted to ``size`` (a square side or (H, W))."""
    with Image.open(path) as img:
        rgb = fit_crop(to_rgb(img), (size, size) if isinstance(size, int) else tuple(size))
    arr = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)
