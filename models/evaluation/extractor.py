"""The feature-extractor protocol shared by every metric, and a wrapper that makes a module one.

A feature extractor maps images (N, 3, H, W) with values in [0, 1] to features (N, D). The wrapper
adds what every extractor needs: input checks, batching, no-grad eval mode and device placement, and
it always returns float32 features on the CPU so the metrics never see device tensors.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["FeatureExtractor", "ModuleFeatureExtractor", "check_images", "resolve_device"]

_RANGE_TOLERANCE = 1e-3


#################################################################################
#                                   Helpers                                     #
#################################################################################


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_images(images: torch.Tensor) -> torch.Tensor:
    """Validate images (N, C, H, W) in [0, 1] with C in {1, 3}; grey images are repeated to 3 channels.

    Raises ValueError naming the problem (wrong rank, channels, or a [-1, 1] range passed by mistake).
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor; got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, 3, H, W) or (N, 1, H, W); got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is empty")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1]; got dtype {images.dtype}")
    low, high = float(images.min()), float(images.max())
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"images must have values in [0, 1]; got range [{low:.3f}, {high:.3f}] "
            "(map [-1, 1] samples with (x + 1) / 2)"
        )
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)  # (N, 3, H, W)
    return images.clamp(0.0, 1.0)


#################################################################################
#                            Protocol and wrapper                               #
#################################################################################


@runtime_checkable
class FeatureExtractor(Protocol):
    """Anything that maps images (N, 3, H, W) in [0, 1] to features (N, feature_dim) on the CPU."""

    feature_dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class ModuleFeatureExtractor:
    """Wraps a module mapping a batch (B, 3, H, W) in [0, 1] to (B, D) into a FeatureExtractor.

    The module is moved to ``device`` and put in eval mode; calls run under ``torch.no_grad`` in
    batches of ``batch_size`` and return float32 CPU features.
    """

    def __init__(
        self,
        module: nn.Module,
        feature_dim: int,
        *,
        batch_size: int = 64,
        device: str | torch.device | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        self.feature_dim = int(feature_dim)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = check_images(images)  # (N, 3, H, W)
        chunks = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start : start + self.batch_size].to(self.device, torch.float32)  # (B, 3, H, W)
            feats = self.module(batch)  # (B, D)
            if feats.ndim != 2 or feats.shape[1] != self.feature_dim:
                raise RuntimeError(
                    f"module returned shape {tuple(feats.shape)}; expected (B, {self.feature_dim})"
                )
            chunks.append(feats.float().cpu())
        return torch.cat(chunks)  # (N, D)
