"""Our FD and KID agree with torchmetrics' implementations on the same features."""

from __future__ import annotations

import pytest
import torch

from models.evaluation.frechet import frechet_distance, kernel_inception_distance
from models.evaluation.library import library_fd, library_kid

pytestmark = pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance`:UserWarning")


def _sets(n_real: int = 300, n_gen: int = 200, dim: int = 32, shift: float = 0.3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(n_real, dim, generator=g)
    generated = torch.randn(n_gen, dim, generator=g) @ (torch.eye(dim) + 0.1 * torch.randn(dim, dim, generator=g))
    return real, generated + shift


@pytest.mark.parametrize("shift", [0.0, 0.3, 2.0])
def test_fd_matches_torchmetrics(shift):
    real, generated = _sets(shift=shift)
    ours, theirs = frechet_distance(real, generated), library_fd(real, generated)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-9)
    assert ours > 0.01  # a real distance, not two zeros agreeing


def test_fd_of_the_domain_features_matches_torchmetrics(tmp_path):
    """The benchmark's features (a trained domain classifier's) give the same FD through either path."""
    from models.evaluation import domain_feature_extractor, train_domain_classifier

    g = torch.Generator().manual_seed(1)
    images = torch.rand(40, 3, 16, 16, generator=g)
    labels = torch.arange(4).repeat_interleave(10)
    images[labels == 1, 0] += 0.5  # classes a small CNN can tell apart
    images = images.clamp(0, 1)
    classifier = train_domain_classifier(images, labels, class_names=list("abcd"), epochs=2, seed=0).model
    extract = domain_feature_extractor(classifier)
    real, generated = extract(images[:20]), extract(torch.rand(20, 3, 16, 16, generator=g))
    assert frechet_distance(real, generated) == pytest.approx(library_fd(real, generated), rel=1e-6)


def test_kid_matches_torchmetrics_on_whole_sets():
    """With one subset holding every sample of two equal-size sets, both estimators see the same data."""
    real, generated = _sets(n_real=150, n_gen=150)
    ours, _ = kernel_inception_distance(real, generated, num_subsets=1, subset_size=150)
    theirs, _ = library_kid(real, generated)
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert ours > 0
