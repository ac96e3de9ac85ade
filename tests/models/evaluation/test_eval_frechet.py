"""Fréchet distance and KID against closed forms and brute-force references."""

import numpy as np
import pytest
import scipy.linalg
import torch

from models.evaluation.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_stats,
    kernel_inception_distance,
    polynomial_kernel,
    unbiased_mmd2,
)


def _diag_gaussian_fd(mu1, var1, mu2, var2):
    """Closed form for diagonal covariances: ||mu1-mu2||^2 + sum(v1 + v2 - 2 sqrt(v1 v2))."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2)))


def _random_spd(rng, dim, rank=None):
    a = rng.normal(size=(dim, rank or dim))
    return a @ a.T / (rank or dim)


# --------------------------------------------------------------------------- Fréchet from statistics


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_fd_of_diagonal_gaussians_matches_closed_form(method):
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    var1, var2 = rng.uniform(0.1, 3.0, size=8), rng.uniform(0.1, 3.0, size=8)
    got = frechet_distance_from_stats(mu1, np.diag(var1), mu2, np.diag(var2), method=method)
    assert got == pytest.approx(_diag_gaussian_fd(mu1, var1, mu2, var2), rel=1e-10)


def test_fd_hand_computed_two_dimensional_case():
    # mu diff (3, 4) -> 25; variances (1, 4) vs (4, 1): (1+4-2*2) + (4+1-2*2) = 2.
    got = frechet_distance_from_stats([0.0, 0.0], np.diag([1.0, 4.0]), [3.0, 4.0], np.diag([4.0, 1.0]))
    assert got == pytest.approx(27.0, rel=1e-12)


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_fd_of_scaled_full_covariance_matches_closed_form(method):
    # S2 = c^2 S1 gives tr((S1 S2)^{1/2}) = c tr(S1), so FD = ||dmu||^2 + (1 - c)^2 tr(S1).
    rng = np.random.default_rng(1)
    sigma1 = _random_spd(rng, 16)
    c = 1.7
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    expected = np.sum((mu1 - mu2) ** 2) + (1 - c) ** 2 * np.trace(sigma1)
    got = frechet_distance_from_stats(mu1, sigma1, mu2, c**2 * sigma1, method=method)
    assert got == pytest.approx(expected, rel=1e-9)


def test_fd_general_covariances_matches_reference_formula():
    # Reference: tr((S1 S2)^{1/2}) = tr((S1^{1/2} S2 S1^{1/2})^{1/2}), via scipy.linalg.sqrtm twice.
    rng = np.random.default_rng(2)
    s1, s2 = _random_spd(rng, 12), _random_spd(rng, 12)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    r1 = scipy.linalg.sqrtm(s1).real
    expected = (
        np.sum((mu1 - mu2) ** 2)
        + np.trace(s1)
        + np.trace(s2)
        - 2 * np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1).real)
    )
    for method in ("eigh", "sqrtm"):
        assert frechet_distance_from_stats(mu1, s1, mu2, s2, method=method) == pytest.approx(
            expected, rel=1e-8
        )


def test_fd_eigh_and_sqrtm_agree_on_singular_covariances():
    # Fewer samples than dimensions: rank-deficient covariances, the case pytorch-fid's eps handles.
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 40)), rng.normal(loc=0.3, size=(25, 40))
    eigh = frechet_distance(x, y, method="eigh")
    sqrtm = frechet_distance(x, y, method="sqrtm")
    assert np.isfinite(eigh) and eigh > 0
    assert eigh == pytest.approx(sqrtm, rel=1e-4)


def test_fd_is_invariant_under_a_common_rotation():
    rng = np.random.default_rng(4)
    s1, s2 = _random_spd(rng, 6), _random_spd(rng, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    before = frechet_distance_from_stats(mu1, s1, mu2, s2)
    after = frechet_distance_from_stats(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T)
    assert after == pytest.approx(before, rel=1e-9)


def test_fd_rejects_mismatched_shapes_and_unknown_method():
    with pytest.raises(ValueError, match="same length"):
        frechet_distance_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="covariances must have shape"):
        frechet_distance_from_stats(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="method"):
        frechet_distance_from_stats(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")


# --------------------------------------------------------------------------- Fréchet from features


def test_feature_statistics_are_float64_mean_and_unbiased_covariance():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, sigma = feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.shape == (2, 2)
    np.testing.assert_allclose(mu, [2.0, 4.0])
    np.testing.assert_allclose(sigma, np.cov(x.numpy().astype(np.float64), rowvar=False))
    assert sigma[0, 0] == pytest.approx(4.0)  # ((-2)^2 + 0 + 2^2) / (3 - 1)


def test_fd_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(5).normal(size=(300, 32))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(x, x, method="sqrtm") == pytest.approx(0.0, abs=1e-6)


def test_fd_is_symmetric():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(200, 10)), rng.normal(scale=2.0, size=(150, 10))
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-10)


def test_fd_of_a_translated_set_is_the_squared_shift():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(100, 5))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-8)


def test_fd_of_gaussian_samples_converges_to_the_closed_form():
    rng = np.random.default_rng(8)
    mu1, mu2 = np.zeros(4), np.array([1.0, 0.0, -1.0, 0.5])
    var1, var2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([0.25, 2.0, 2.0, 4.0])
    x = rng.normal(mu1, np.sqrt(var1), size=(200_000, 4))
    y = rng.normal(mu2, np.sqrt(var2), size=(200_000, 4))
    expected = _diag_gaussian_fd(mu1, var1, mu2, var2)  # 2.25 + 0.25 + 0 + 0.29 + 1 = 3.79...
    assert frechet_distance(torch.from_numpy(x).float(), torch.from_numpy(y).float()) == pytest.approx(
        expected, rel=0.02
    )


def test_fd_rejects_bad_feature_sets():
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(5), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((5, 3), np.nan), np.zeros((5, 3)))


# --------------------------------------------------------------------------- KID


def _brute_force_unbiased_mmd2(x, y):
    """The KID estimator written out as loops over pairs (cubic kernel, gamma = 1/d, coef0 = 1)."""
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_polynomial_kernel_values():
    x, y = np.array([[1.0, 2.0]]), np.array([[3.0, -1.0], [0.0, 0.0]])
    np.testing.assert_allclose(polynomial_kernel(x, y), [[(1 / 2 + 1) ** 3, 1.0]])  # x.y = 1, d = 2
    np.testing.assert_allclose(polynomial_kernel(x, y, degree=1, gamma=1.0, coef0=0.0), [[1.0, 0.0]])


def test_kid_with_one_full_subset_equals_the_brute_force_estimator():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(12, 5)), rng.normal(loc=0.5, size=(12, 5))
    mean, std = kernel_inception_distance(x, y, num_subsets=1, subset_size=12)
    assert mean == pytest.approx(_brute_force_unbiased_mmd2(x, y), rel=1e-10)
    assert std == 0.0


def test_unbiased_mmd2_drops_the_diagonal_within_sets_but_not_across():
    k = polynomial_kernel(np.eye(3), np.eye(3))  # off-diagonal 1, diagonal (1/3 + 1)^3
    # within = 2 * 6 / 6 = 2; cross = 2 * (6 + 3 * 64/27) / 9
    assert unbiased_mmd2(k, k, k) == pytest.approx(2 - 2 * (6 + 3 * 64 / 27) / 9)


def test_kid_with_a_linear_kernel_estimates_the_squared_mean_difference():
    # With k(x, y) = x.y the population MMD^2 is exactly ||mu1 - mu2||^2, and the estimator is unbiased.
    rng = np.random.default_rng(10)
    mu2 = np.array([0.5, -0.5, 1.0])
    x, y = rng.normal(size=(4000, 3)), rng.normal(mu2, 1.0, size=(4000, 3))
    mean, _ = kernel_inception_distance(
        x, y, num_subsets=20, subset_size=1000, degree=1, gamma=1.0, coef0=0.0
    )
    assert mean == pytest.approx(float(mu2 @ mu2), rel=0.05)


def test_kid_is_near_zero_for_the_same_distribution_and_clearly_positive_when_shifted():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    shifted = rng.normal(loc=0.5, size=(1000, 16))
    same_mean, same_std = kernel_inception_distance(x, y, num_subsets=20, subset_size=500)
    diff_mean, diff_std = kernel_inception_distance(x, shifted, num_subsets=20, subset_size=500)
    assert abs(same_mean) < 0.01
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert diff_mean > 0.1
    assert diff_mean > 20 * max(diff_std, abs(same_mean))


def test_kid_is_deterministic_under_a_seed_and_uses_min_subset_size():
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(30, 4))
    a = kernel_inception_distance(x, y, num_subsets=5, subset_size=1000, seed=3)
    b = kernel_inception_distance(x, y, num_subsets=5, subset_size=1000, seed=3)
    c = kernel_inception_distance(x, y, num_subsets=5, subset_size=1000, seed=4)
    assert a == b and a != c
    assert a[1] > 0  # subsets of min(1000, 50, 30) = 30 from 50 samples differ


def test_kid_rejects_bad_arguments():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match="dimensions differ"):
        kernel_inception_distance(x, np.zeros((10, 2)))
    with pytest.raises(ValueError, match="num_subsets"):
        kernel_inception_distance(x, x, num_subsets=0)
