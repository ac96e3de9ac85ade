"""Diff-Tuning for flow matching: the σ densities of each stream, pinned by their numbers."""

from __future__ import annotations

import math

import pytest
import torch

from models.flow_matching import (
    SigmaDensity,
    loss_weights,
    noisy_input,
    sample_stream_sigmas,
    shift_sigmas,
    stream_mean_sigma,
    velocity_target,
)

UNIFORM = SigmaDensity("uniform")
LOGIT_NORMAL = SigmaDensity("logit_normal", logit_mean=0.0, logit_std=1.0)  # SD3's default
N = 200_000  # sampling error of a mean ≈ 0.3/√N ≈ 0.0007


def _sample_mean(density, power, stream, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return sample_stream_sigmas(density, N, power, stream, generator).double().mean().item()


@pytest.mark.parametrize("power", [0.0, 1.0, 2.0])
def test_uniform_native_density_gives_beta_streams(power):
    """q uniform: the target stream is Beta(s+1, 1), mean (s+1)/(s+2); the bank its mirror Beta(1, s+1)."""
    expected = (power + 1) / (power + 2)
    assert stream_mean_sigma(UNIFORM, power, "target") == pytest.approx(expected, abs=1e-6)
    assert stream_mean_sigma(UNIFORM, power, "bank") == pytest.approx(1 - expected, abs=1e-6)
    assert _sample_mean(UNIFORM, power, "target") == pytest.approx(expected, abs=0.004)
    assert _sample_mean(UNIFORM, power, "bank") == pytest.approx(1 - expected, abs=0.004)


def test_logit_normal_streams_by_sampling_and_by_quadrature():
    """SD3's logit-normal(0, 1): s = 0 keeps its mean 1/2 for both streams; s = 1 moves the target
    stream to E[σ²]/E[σ] and the bank stream to its mirror (the density is symmetric about 1/2)."""
    z = torch.linspace(-10, 10, 400_001, dtype=torch.float64)  # independent check: plain E over z
    sigma, pdf = torch.sigmoid(z), torch.exp(-z**2 / 2)
    e1, e2 = (sigma * pdf).sum() / pdf.sum(), (sigma**2 * pdf).sum() / pdf.sum()
    target_s1 = float(e2 / e1)
    assert 0.58 < target_s1 < 0.59  # ≈ 0.587: gentler than under a uniform q (2/3), q being peaked at 1/2
    for power, target in ((0.0, 0.5), (1.0, target_s1)):
        assert stream_mean_sigma(LOGIT_NORMAL, power, "target") == pytest.approx(target, abs=1e-5)
        assert stream_mean_sigma(LOGIT_NORMAL, power, "bank") == pytest.approx(1 - target, abs=1e-5)
        assert _sample_mean(LOGIT_NORMAL, power, "target", seed=1) == pytest.approx(target, abs=0.004)
        assert _sample_mean(LOGIT_NORMAL, power, "bank", seed=2) == pytest.approx(1 - target, abs=0.004)


def test_power_zero_is_exactly_the_native_recipe():
    density = SigmaDensity("logit_normal", logit_mean=0.3, logit_std=0.8, shift=3.0)
    native = density.sample(64, torch.Generator().manual_seed(7))
    for stream in ("target", "bank"):
        drawn = sample_stream_sigmas(density, 64, 0.0, stream, torch.Generator().manual_seed(7))
        assert torch.equal(drawn, native)


def test_a_shift_composes_with_the_streams():
    """Flux/SD3's shift is part of the native density; the stream factors apply after it."""
    shifted = SigmaDensity("uniform", shift=3.0)
    u = (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000
    sigma = shift_sigmas(u, 3.0)
    assert stream_mean_sigma(shifted, 0.0, "target") == pytest.approx(sigma.mean().item(), abs=1e-6)
    expected = float((sigma**2).sum() / sigma.sum())
    assert stream_mean_sigma(shifted, 1.0, "target") == pytest.approx(expected, abs=1e-5)
    assert _sample_mean(shifted, 1.0, "target", seed=3) == pytest.approx(expected, abs=0.004)
    assert shift_sigmas(torch.tensor([0.0, 0.5, 1.0]), 3.0).tolist() == pytest.approx([0.0, 0.75, 1.0])


def test_draws_are_reproducible_and_in_range():
    draw = lambda: sample_stream_sigmas(LOGIT_NORMAL, 1000, 8.0, "bank", torch.Generator().manual_seed(5))  # noqa: E731
    first, second = draw(), draw()
    assert torch.equal(first, second) and first.shape == (1000,)
    assert 0 < first.min() and first.max() < 1 and first.mean() < 0.2  # s = 8: the bank sits at low noise
    with pytest.raises(ValueError, match="power must be ≥ 0"):
        sample_stream_sigmas(LOGIT_NORMAL, 4, -1.0, "target")
    with pytest.raises(ValueError, match="stream must be"):
        sample_stream_sigmas(LOGIT_NORMAL, 4, 1.0, "source")


def test_interpolation_target_and_sd3_weightings():
    x0, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigmas = torch.tensor([0.0, 0.5, 1.0])
    x = noisy_input(x0, noise, sigmas)
    assert torch.equal(x[0], x0[0]) and torch.equal(x[2], noise[2])
    assert torch.allclose(x[1], (x0[1] + noise[1]) / 2)
    assert torch.equal(velocity_target(x0, noise), noise - x0)
    s = torch.tensor([0.25, 0.5])
    assert loss_weights("none", s).tolist() == [1.0, 1.0]
    assert loss_weights("sigma_sqrt", s).tolist() == pytest.approx([16.0, 4.0])
    assert loss_weights("cosmap", s).tolist() == pytest.approx([2 / (math.pi * 0.625), 2 / (math.pi * 0.5)])
    with pytest.raises(ValueError, match="unknown loss weighting"):
        loss_weights("min_snr", s)
