"""Encode a target dataset to latents once and cache them on disk.

The VAE posterior's mean and std are stored (for both flips when ``random_flip`` is on), so each
training step draws a fresh latent sample z = μ + σ·ε as DiT does, at the cost of a lookup.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from models.data import ImageFolder, load_image
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


def latent_cache_key(folder: ImageFolder, family: Family, resolution: int, flip: bool) -> str:
    vae = getattr(family, "vae", None)
    encoder = fingerprint_module(vae) if vae is not None else family.base_fingerprint
    text = f"{folder.fingerprint()}|{encoder}|{family.name}|{resolution}|{int(flip)}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@torch.no_grad()
def encode_image_folder(
    family: Family,
    folder: ImageFolder,
    *,
    resolution: int,
    flip: bool,
    cache_dir: Path | None,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> LatentSet:
    """Encode every image (and its mirror image) once; reuse the cache when the key matches."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "latents" / f"{latent_cache_key(folder, family, resolution, flip)}.safetensors"
        if path.exists():
            data = load_file(path)
            return LatentSet(data["mean"], data["std"], data["labels"])
    means, stds = [], []
    for start in range(0, len(folder), batch_size):
        images = torch.stack([load_image(p, resolution) for p in folder.files[start : start + batch_size]])
        views = [images, images.flip(-1)] if flip else [images]  # each (n, 3, R, R)
        encoded = [family.encode_images(v) for v in views]
        means.append(torch.stack([m for m, _ in encoded], dim=1))  # (n, F, C, h, w)
        stds.append(torch.stack([s for _, s in encoded], dim=1))
        if progress:
            progress(min(start + batch_size, len(folder)), len(folder))
    result = LatentSet(torch.cat(means).float(), torch.cat(stds).float(), torch.tensor(folder.labels))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"mean": result.mean.contiguous(), "std": result.std.contiguous(),
                   "labels": result.labels}, str(tmp))
        os.replace(tmp, path)
    return result
