"""Image-set metrics with a pluggable feature extractor: Fréchet distance and KID in one call."""

from __future__ import annotations

import torch

from models.evaluation.extractor import FeatureExtractor
from models.evaluation.frechet import frechet_distance, kernel_inception_distance

__all__ = ["compute_metrics", "compute_metrics_from_features"]


def compute_metrics_from_features(
    real_features: torch.Tensor,
    fake_features: torch.Tensor,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """FD and KID (mean, std) between precomputed features (N1, D) and (N2, D).

    Cache the real set's features with this when the same real images are compared many times.
    """
    kid_mean, kid_std = kernel_inception_distance(
        real_features, fake_features, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
    )
    return {"fd": frechet_distance(real_features, fake_features), "kid_mean": kid_mean, "kid_std": kid_std}


def compute_metrics(
    real_images: torch.Tensor,
    fake_images: torch.Tensor,
    extractor: FeatureExtractor,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """``{"fd", "kid_mean", "kid_std"}`` between two image sets (N, 3, H, W) in [0, 1] under ``extractor``."""
    real_features = extractor(real_images)  # (N1, D)
    fake_features = extractor(fake_images)  # (N2, D)
    return compute_metrics_from_features(
        real_features, fake_features, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed
    )
