"""Encode a target dataset to latents once and cache them on disk.

The VAE posterior's mean and std are stored (for both flips when ``random_flip`` is on), so each
training step draws a fresh latent sample z = μ + σ·ε as DiT does, at the cost of a lookup. With aspect-ratio buckets, each bucket's
images are encoded at its size and kept apart (``BucketedLatents``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from contract.buckets import Size
from models.data import load_image
from models.families.base import Family, fingerprint_module


@dataclass
class LatentSet:
    """Cached VAE posteriors of a dataset: mean/std (N, F, C, h, w) with F flips, and labels (N,)."""

    mean: torch.Tensor
    std: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.mean.shape[0]

    def sample(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Latents for rows ``index``: a random flip and a posterior sample each."""
        flips = torch.randint(0, self.mean.shape[1], (len(index),), generator=generator)  # (n,)
        mean, std = self.mean[index, flips], self.std[index, flips]  # (n, C, h, w)
        return mean + std * torch.randn(mean.shape, generator=generator)


@dataclass
class BucketedLatents:
    """Cached posteriors of a dataset in aspect-ratio buckets: one ``LatentSet`` per bucket size, the
    dataset rows each holds, and every row's condition in dataset order (``labels``)."""

    sizes: list[Size]  # (H, W) pixels of each bucket
    parts: list[LatentSet]
    rows: list[torch.Tensor]  # dataset indices held by each bucket, in its part's order
    labels: torch.Tensor

    def __post_init__(self) -> None:
        self.bucket_of = torch.empty(len(self.labels), dtype=torch.long)  # (N,)
        self.local = torch.empty(len(self.labels), dtype=torch.long)  # (N,) row within its bucket
        for b, rows in enumerate(self.rows):
            self.bucket_of[rows], self.local[rows] = b, torch.arange(len(rows))

    def __len__(self) -> int:
        return len(self.labels)

    def bucket(self, index: torch.Tensor) -> int:
        """The one bucket that dataset rows ``index`` come from."""
        found = self.bucket_of[index].unique()
        if len(found) != 1:
            raise ValueError(f"a batch spans buckets {found.tolist()}")
        return int(found[0])

    def sample(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Latents (n, C, h, w) for dataset rows ``index`` of one bucket, as ``LatentSet.sample``."""
        return self.parts[self.bucket(index)].sample(self.local[index], generator)


def latent_cache_key(folder, family: Family, resolution: int, flip: bool) -> str:
    vae = getattr(family, "vae", None)
    encoder = fingerprint_module(vae) if vae is not None else family.base_fingerprint
    text = f"{folder.fingerprint()}|{encoder}|{family.name}|{resolution}|{int(flip)}"
    if getattr(folder, "sizes", None):
        text += "|" + ",".join(f"{h}x{w}" for h, w in folder.sizes)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _encode(family: Family, files: list[Path], size: int | Size, flip: bool, batch_size: int,
            progress: Callable[[int], None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std (n, F, C, h, w) of image files fitted to ``size``."""
    means, stds = [], []
    for start in range(0, len(files), batch_size):
        images = torch.stack([load_image(p, size) for p in files[start : start + batch_size]])
        views = [images, images.flip(-1)] if flip else [images]  # each (n, 3, H, W)
        encoded = [family.encode_images(v) for v in views]
        means.append(torch.stack([m for m, _ in encoded], dim=1))  # (n, F, C, h, w)
        stds.append(torch.stack([s for _, s in encoded], dim=1))
        progress(len(images))
    return torch.cat(means).float(), torch.cat(stds).float()


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def _bucketed(data: dict[str, torch.Tensor], folder) -> BucketedLatents:
    sizes = sorted(set(folder.sizes))
    return BucketedLatents(sizes=sizes, parts=[LatentSet(data[f"mean.{b}"], data[f"std.{b}"], data[f"rows.{b}"])
                                               for b in range(len(sizes))],
                           rows=[data[f"rows.{b}"] for b in range(len(sizes))], labels=torch.tensor(folder.labels))


@torch.no_grad()
def encode_image_folder(
    family: Family,
    folder,
    *,
    resolution: int,
    flip: bool,
    cache_dir: Path | None,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> LatentSet | BucketedLatents:
    """Encode every image (and its mirror image) once; reuse the cache when the key matches. A folder
    with ``sizes`` (aspect-ratio buckets) is encoded bucket by bucket into ``BucketedLatents``."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "latents" / f"{latent_cache_key(folder, family, resolution, flip)}.safetensors"
    bucketed = bool(getattr(folder, "sizes", None))
    if path is not None and path.exists():
        data = load_file(path)
        return _bucketed(data, folder) if bucketed else LatentSet(data["mean"], data["std"], data["labels"])
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, len(folder))

    if not bucketed:
        mean, std = _encode(family, folder.files, resolution, flip, batch_size, advance)
        result = LatentSet(mean, std, torch.tensor(folder.labels))
        if path is not None:
            _save({"mean": result.mean, "std": result.std, "labels": result.labels}, path)
        return result
    data = {}
    for b, size in enumerate(sorted(set(folder.sizes))):
        rows = [i for i, s in enumerate(folder.sizes) if s == size]
        data[f"mean.{b}"], data[f"std.{b}"] = _encode(family, [folder.files[i] for i in rows], size, flip,
                                                      batch_size, advance)
        data[f"rows.{b}"] = torch.tensor(rows)
    if path is not None:
        _save(data, path)
    return _bucketed(data, folder)
