"""compute_metrics with a pluggable extractor, and the extractor wrapper's checks."""

import numpy as np
import pytest
import torch
from torch import nn

from models.evaluation.extractor import FeatureExtractor, ModuleFeatureExtractor, check_images
from models.evaluation.frechet import frechet_distance, kernel_inception_distance
from models.evaluation.metrics import compute_metrics, compute_metrics_from_features


class MeanColour(nn.Module):
    """Features = per-channel mean and std of the image: (N, 6)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)  # (N, 6)


def _images(n: int, seed: int, brightness: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.6 * torch.rand(n, 3, 8, 8, generator=g) + brightness).clamp(0, 1)


@pytest.fixture
def extractor() -> ModuleFeatureExtractor:
    return ModuleFeatureExtractor(MeanColour(), feature_dim=6, batch_size=16, device="cpu")


def test_wrapper_satisfies_the_protocol_and_batches(extractor):
    assert isinstance(extractor, FeatureExtractor)
    images = _images(37, seed=0)
    feats = extractor(images)
    assert feats.shape == (37, 6) and feats.dtype == torch.float32 and not feats.requires_grad
    assert torch.allclose(feats, MeanColour()(images), atol=1e-6)


def test_wrapper_checks_the_module_output_dimension():
    wrong = ModuleFeatureExtractor(MeanColour(), feature_dim=5, device="cpu")
    with pytest.raises(RuntimeError, match=r"expected \(B, 5\)"):
        wrong(_images(2, seed=0))


def test_check_images_validates_and_expands_grey():
    grey = torch.rand(4, 1, 8, 8)
    out = check_images(grey)
    assert out.shape == (4, 3, 8, 8) and torch.equal(out[:, 2], grey[:, 0])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        check_images(torch.rand(2, 3, 8, 8) * 2 - 1)
    with pytest.raises(ValueError, match="shape"):
        check_images(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="floating point"):
        check_images(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError):
        check_images(np.zeros((2, 3, 8, 8)))


def test_compute_metrics_of_a_set_with_itself(extractor):
    images = _images(64, seed=1)
    metrics = compute_metrics(images, images, extractor, kid_subsets=10, kid_subset_size=32)
    assert set(metrics) == {"fd", "kid_mean", "kid_std"}
    assert metrics["fd"] == pytest.approx(0.0, abs=1e-9)
    assert abs(metrics["kid_mean"]) < 1e-3


def test_compute_metrics_ranks_a_shifted_set_as_further(extractor):
    real, same = _images(200, seed=2), _images(200, seed=3)
    brighter = _images(200, seed=4, brightness=0.3)
    close = compute_metrics(real, same, extractor, kid_subsets=10, kid_subset_size=100)
    far = compute_metrics(real, brighter, extractor, kid_subsets=10, kid_subset_size=100)
    assert far["fd"] > 10 * close["fd"]
    assert far["kid_mean"] > 10 * abs(close["kid_mean"])
    assert far["kid_mean"] > 0 and far["kid_std"] >= 0
    # The mean colour moves by about +0.3 - clamping on every channel: FD is at least most of 3 * 0.3^2.
    assert far["fd"] > 0.15


def test_compute_metrics_equals_the_feature_path(extractor):
    real, fake = _images(50, seed=5), _images(40, seed=6, brightness=0.1)
    direct = compute_metrics(real, fake, extractor, kid_subsets=5, kid_subset_size=20, seed=3)
    f_real, f_fake = extractor(real), extractor(fake)
    via_features = compute_metrics_from_features(f_real, f_fake, kid_subsets=5, kid_subset_size=20, seed=3)
    assert direct == via_features
    assert direct["fd"] == pytest.approx(frechet_distance(f_real, f_fake))
    assert (direct["kid_mean"], direct["kid_std"]) == kernel_inception_distance(
        f_real, f_fake, num_subsets=5, subset_size=20, seed=3
    )
