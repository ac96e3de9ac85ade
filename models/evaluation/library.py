"""FD and KID computed by torchmetrics (the maintained implementation) on the features of any extractor.

torchmetrics' ``FrechetInceptionDistance`` and ``KernelInceptionDistance`` take a feature module in place of
Inception. :class:`PrecomputedFeatures` is that module for features already extracted (our domain classifier's,
or the pytorch-fid Inception of :mod:`.inception`), so the library computes the statistics on exactly the
features our own :mod:`.frechet` sees; ``tests/models/evaluation`` checks that the two agree. torchmetrics'
own Inception (``feature=2048``) needs torch-fidelity, which imports torchvision (it does not load beside
this machine's CPU torch), so :func:`library_fid` gives torchmetrics the pytorch-fid Inception of
:mod:`.inception` (the same TF-2015 network, weights from a local file or ``$DIFFTUNE_FID_WEIGHTS``).
"""

from __future__ import annotations

import torch
from torch import nn


class PrecomputedFeatures(nn.Module):
    """A feature "extractor" that returns its input: rows are features already computed."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class _InceptionPool3(nn.Module):
    """The pytorch-fid Inception as torchmetrics' feature module: images in [0, 1] -> pool3 (N, 2048)."""

    num_features = 2048

    def __init__(self, inception: nn.Module) -> None:
        super().__init__()
        self.inception = inception.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inception(images.float())


def library_fid(real: torch.Tensor, generated: torch.Tensor, *, weights: str | None = None,
                batch_size: int = 50) -> float:
    """Inception FID of image sets (N, 3, H, W) in [0, 1], computed by torchmetrics with the pytorch-fid
    Inception loaded from ``weights`` (a local file; else ``$DIFFTUNE_FID_WEIGHTS``, torch.hub's cache)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from models.evaluation.inception import load_fid_inception

    metric = FrechetInceptionDistance(feature=_InceptionPool3(load_fid_inception(weights)))  # float64 sums
    for images, is_real in ((real, True), (generated, False)):
        for batch in images.split(batch_size):
            metric.update(batch, real=is_real)
    return float(metric.compute())


def library_fd(real: torch.Tensor, generated: torch.Tensor) -> float:
    """torchmetrics' Fréchet distance between feature sets (N, D) and (M, D), in float64."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), reset_real_features=True)
    metric.set_dtype(torch.float64)
    metric.update(real.double(), real=True)
    metric.update(generated.double(), real=False)
    return float(metric.compute())


def library_kid(real: torch.Tensor, generated: torch.Tensor, *, subsets: int = 1, subset_size: int | None = None,
                ) -> tuple[float, float]:
    """torchmetrics' KID (mean, std) over ``subsets`` subsets (all samples in one subset by default)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = subset_size or min(len(real), len(generated))
    metric = KernelInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(generated.double(), real=False)
    mean, std = metric.compute()
    return float(mean), float(std)
