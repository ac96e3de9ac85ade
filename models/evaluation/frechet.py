"""Fréchet distance and kernel inception distance (KID) between two sets of features.

Both metrics work on any features (Inception-v3 pool3 for FID, a domain classifier's penultimate layer
for a domain FD). Everything is computed in float64 numpy.

- Fréchet distance: ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})`` between the Gaussians
  fitted to the two sets (Heusel et al. 2017). The trace of the matrix square root is computed from a
  symmetric eigen-decomposition by default (always real, no Schur iterations), or with
  ``scipy.linalg.sqrtm`` exactly as pytorch-fid does (``method="sqrtm"``).
- KID: the unbiased estimate of MMD^2 with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``,
  averaged over random subsets (Binkowski et al. 2018; same estimator as torch-fidelity and clean-fid).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.linalg
import torch

ArrayLike = np.ndarray | torch.Tensor

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_stats",
    "kernel_inception_distance",
    "polynomial_kernel",
    "unbiased_mmd2",
]


#################################################################################
#                                   Helpers                                     #
#################################################################################


def _as_features(features: ArrayLike, name: str) -> np.ndarray:
    """Return ``features`` as a 2-D float64 array (N, D), raising ValueError on bad input."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().to(torch.float64).numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D); got shape {array.shape}")
    if array.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples; got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64 (as pytorch-fid)."""
    array = _as_features(features, "features")  # (N, D)
    mu = array.mean(axis=0)  # (D,)
    sigma = np.cov(array, rowvar=False)  # (D, D)
    return mu, np.atleast_2d(sigma)


#################################################################################
#                              Fréchet distance                                 #
#################################################################################


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via eigh (negative rounding clipped)."""
    sym = 0.5 * (matrix + matrix.T)  # (D, D)
    eigvals, eigvecs = np.linalg.eigh(sym)  # (D,), (D, D)
    eigvals = np.clip(eigvals, 0.0, None)
    return (eigvecs * np.sqrt(eigvals)) @ eigvecs.T  # (D, D)


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^{1/2}) as sum sqrt(eig(S1^{1/2} S2 S1^{1/2})): a symmetric PSD problem, always real."""
    root1 = _psd_sqrt(sigma1)  # (D, D)
    inner = root1 @ sigma2 @ root1  # (D, D), similar to S1 S2
    inner = 0.5 * (inner + inner.T)
    eigvals = np.clip(np.linalg.eigvalsh(inner), 0.0, None)  # (D,)
    return float(np.sqrt(eigvals).sum())


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """tr((S1 S2)^{1/2}) with scipy's sqrtm and pytorch-fid's handling of singular/complex results."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)  # (D, D)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps  # (D, D)
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0.0, atol=1e-3):
            raise ValueError(f"sqrtm has an imaginary component of {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance_from_stats(
    mu1: ArrayLike,
    sigma1: ArrayLike,
    mu2: ArrayLike,
    sigma2: ArrayLike,
    *,
    method: Literal["eigh", "sqrtm"] = "eigh",
    eps: float = 1e-6,
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``method="eigh"`` (default) is exact for symmetric PSD covariances and never complex;
    ``method="sqrtm"`` reproduces pytorch-fid (``eps`` is added to the diagonals only when the product
    is singular). The result is clamped at 0: it is a squared distance, and a value like -1e-12 is
    rounding.
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))  # (D,)
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))  # (D, D)
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must be vectors of the same length; got {mu1.shape} and {mu2.shape}")
    dim = mu1.shape[0]
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(f"covariances must have shape ({dim}, {dim}); got {sigma1.shape} and {sigma2.shape}")
    if method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    elif method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    else:
        raise ValueError(f"method must be 'eigh' or 'sqrtm'; got {method!r}")
    diff = mu1 - mu2  # (D,)
    fd = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
    return max(float(fd), 0.0)


def frechet_distance(
    features1: ArrayLike,
    features2: ArrayLike,
    *,
    method: Literal["eigh", "sqrtm"] = "eigh",
    eps: float = 1e-6,
) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (N1, D) and (N2, D)."""
    mu1, sigma1 = feature_statistics(_as_features(features1, "features1"))
    mu2, sigma2 = feature_statistics(_as_features(features2, "features2"))
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    return frechet_distance_from_stats(mu1, sigma1, mu2, sigma2, method=method, eps=eps)


#################################################################################
#                          Kernel inception distance                            #
#################################################################################


def polynomial_kernel(
    x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> np.ndarray:
    """k(x, y) = (gamma x.y + coef0)^degree for rows of x (N, D) and y (M, D); gamma defaults to 1/D."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree  # (N, M)


def unbiased_mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD^2 from kernel matrices of two equal-size samples (m, m), as in the KID paper.

    Within-set terms exclude the diagonal: (sum K_xx - tr K_xx + sum K_yy - tr K_yy) / (m (m-1)),
    minus 2 sum K_xy / m^2 (torch-fidelity's ``mmd_est="unbiased"``).
    """
    m = k_xx.shape[0]
    if m < 2 or k_yy.shape != (m, m) or k_xy.shape != (m, m):
        raise ValueError("kernel matrices must be square, of equal size m >= 2")
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    cross = 2.0 * k_xy.sum() / (m * m)
    return float(within - cross)


def kernel_inception_distance(
    features1: ArrayLike,
    features2: ArrayLike,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (mean, std) over ``num_subsets`` random subsets of ``min(subset_size, N1, N2)`` samples each.

    Each subset is drawn without replacement from each set; the std is over subsets (ddof 0), as in
    torch-fidelity. Deterministic for a given ``seed`` (a local numpy Generator, no global state).
    """
    x = _as_features(features1, "features1")  # (N1, D)
    y = _as_features(features2, "features2")  # (N2, D)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError("num_subsets must be >= 1 and subset_size >= 2")
    m = min(subset_size, x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    kernel = dict(degree=degree, gamma=gamma, coef0=coef0)
    values = np.empty(num_subsets, dtype=np.float64)
    for i in range(num_subsets):
        xs = x[rng.choice(x.shape[0], m, replace=False)]  # (m, D)
        ys = y[rng.choice(y.shape[0], m, replace=False)]  # (m, D)
        values[i] = unbiased_mmd2(
            polynomial_kernel(xs, xs, **kernel),  # (m, m)
            polynomial_kernel(ys, ys, **kernel),  # (m, m)
            polynomial_kernel(xs, ys, **kernel),  # (m, m)
        )
    return float(values.mean()), float(values.std())
