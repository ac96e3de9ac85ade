"""Paired differences between transfer methods, with bootstrap intervals and the seeds a 5% difference needs.

Every method is trained and sampled with the same seeds, and sample ``i`` of a seed starts from the same
noise and class for every method, so methods are compared **paired**: per seed, FD(method) − FD(baseline).
The interval resamples both sources of noise (a hierarchical bootstrap): the seeds (with replacement),
then, within each drawn seed, the generated samples (the same indices for both methods, which keeps the
pairing) and the real reference images. The sampling part of the noise is measured on its own (the
bootstrap variance within a seed), which says whether more seeds or more samples per class would help.

Seeds needed: the normal-approximation sample size of a paired two-sided test at level 0.05 with 80%
power, ``n = ((z_0.975 + z_0.8) · sd_d / δ)²``, for a true difference δ of 5% of the baseline's FD.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.evaluation.sample_quality import DOMAIN_SUFFIX, guidance_order

Z_ALPHA, Z_POWER = 1.959964, 0.841621  # two-sided 0.05, power 0.8
FEATURES_FILE = "features.pt"  # per run: the final evaluation's per-sample features, keyed by setting
REAL_FEATURES_FILE = "real_features.pt"  # per benchmark: the reference images' features


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _root(sigma: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(0.5 * (sigma + sigma.T))
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def _fd(mu_r: np.ndarray, root_r: np.ndarray, tr_r: float, x: np.ndarray) -> float:
    """FD between the real set (mean, covariance root, trace) and the samples ``x`` (N, D)."""
    mu, sigma = _stats(x)
    inner = root_r @ sigma @ root_r
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (inner + inner.T)), 0, None)).sum()
    return float(((mu_r - mu) ** 2).sum() + tr_r + np.trace(sigma) - 2 * tr_sqrt)


def seeds_needed(sd_diff: float, delta: float) -> int | None:
    """Paired seeds for a two-sided 0.05 test with 80% power to detect ``delta`` (None if sd is 0)."""
    if delta <= 0:
        return None
    return max(2, math.ceil(((Z_ALPHA + Z_POWER) * sd_diff / delta) ** 2))


def load_features(run_dir: Path) -> dict[str, np.ndarray] | None:
    path = Path(run_dir) / FEATURES_FILE
    if not path.exists():
        return None
    return {k: v.double().numpy() for k, v in torch.load(path, weights_only=True).items()}


def paired_analysis(real: np.ndarray, runs: dict[str, dict[int, dict[str, np.ndarray]]], *,
                    baseline: str = "standard", boots: int = 400, target: float = 0.05, seed: int = 0,
                    ) -> dict[str, dict[str, Any]]:
    """``{method: {comparison: figures}}`` against ``baseline``, paired by seed (see :func:`_comparisons`).

    ``real`` (N, D) holds the reference features; ``runs[method][seed][setting]`` the generated features.
    Figures: baseline and method FD (mean over the common seeds), the per-seed differences, the mean
    difference (absolute and relative to the baseline's FD) with its 95% bootstrap interval, the share of
    seeds where the method is better, the standard deviation of the per-seed difference split into its
    sampling part, and the seeds needed for a ``target`` relative difference at this and at 4× the samples.
    Every bootstrap draw resamples the reference and each seed's sample indices once, shared by all runs
    of that seed, so every comparison sees the same draws. BLAS runs single-threaded (small matrices).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        point, drawn = _resample(real, runs, boots, np.random.default_rng(seed))
    pick_rng = np.random.default_rng(seed + 1)
    out: dict[str, dict[str, Any]] = {}
    for method, per_seed in runs.items():
        seeds = sorted(set(per_seed) & set(runs.get(baseline, {})))
        for label, setting, base_setting in _comparisons(method == baseline, {k for s in seeds for k in per_seed[s]}):
            use = [s for s in seeds if setting in per_seed[s] and base_setting in runs[baseline][s]]
            if use:
                m, b = (method, setting), (baseline, base_setting)
                out.setdefault(method, {})[label] = _figures(
                    use, np.array([point[m][s] for s in use]), np.array([point[b][s] for s in use]),
                    np.stack([drawn[m][s] for s in use], 1), np.stack([drawn[b][s] for s in use], 1),
                    target, pick_rng)
    return out


def _resample(real: np.ndarray, runs: dict[str, dict[int, dict[str, np.ndarray]]], boots: int,
              rng: np.random.Generator) -> tuple[dict, dict]:
    """FD of every (method, setting) per seed on the full sets, and on ``boots`` hierarchical draws."""
    def fds(real_set: np.ndarray, pick: dict[int, np.ndarray] | None) -> dict:
        mu_r, sigma_r = _stats(real_set)
        root_r, tr_r = _root(sigma_r), float(np.trace(sigma_r))
        out: dict = {}
        for method, per_seed in runs.items():
            for s, per in per_seed.items():
                for k, x in per.items():
                    out.setdefault((method, k), {})[s] = _fd(mu_r, root_r, tr_r, x[pick[s]] if pick else x)
        return out

    point = fds(real, None)
    sizes = {s: next(iter(per.values())).shape[0] for per_seed in runs.values() for s, per in per_seed.items()}
    drawn: dict = {key: {s: np.empty(boots) for s in per} for key, per in point.items()}
    for b in range(boots):
        picks = {s: rng.integers(0, n, n) for s, n in sorted(sizes.items())}
        for key, per in fds(real[rng.integers(0, len(real), len(real))], picks).items():
            for s, value in per.items():
                drawn[key][s][b] = value
    return point, drawn


def _figures(use: list[int], fd_m: np.ndarray, fd_b: np.ndarray, boot_m: np.ndarray, boot_b: np.ndarray,
             target: float, rng: np.random.Generator) -> dict[str, Any]:
    """One comparison's figures from its per-seed FDs and their bootstrap draws (boots, seeds)."""
    diffs = fd_m - fd_b
    within = (boot_m - boot_b).var(axis=0, ddof=1)  # sampling noise alone, per seed
    pick = rng.integers(0, len(use), (boot_m.shape[0], len(use)))  # seeds resampled per draw
    chosen_m, chosen_b = np.take_along_axis(boot_m, pick, 1), np.take_along_axis(boot_b, pick, 1)
    rel = (chosen_m - chosen_b).mean(axis=1) / chosen_b.mean(axis=1)
    several = len(use) > 1
    sd_d = float(diffs.std(ddof=1)) if several else float("nan")
    sampling_var = float(within.mean())
    seed_var = max(sd_d ** 2 - sampling_var, 0.0) if several else float("nan")
    delta = target * float(fd_b.mean())
    return {
        "seeds": use, "fd_baseline": float(fd_b.mean()), "fd_method": float(fd_m.mean()),
        "diff_per_seed": diffs.tolist(), "diff_mean": float(diffs.mean()),
        "rel_mean": float(diffs.mean() / fd_b.mean()),
        "rel_ci95": [float(np.percentile(rel, 2.5)), float(np.percentile(rel, 97.5))],
        "better_seeds": int((diffs < 0).sum()),
        "sd_diff": sd_d, "sd_diff_sampling": math.sqrt(sampling_var),
        "seeds_needed": seeds_needed(sd_d, delta) if several else None,
        "seeds_needed_4x_samples": seeds_needed(math.sqrt(seed_var + sampling_var / 4), delta) if several else None,
    }


def _comparisons(is_baseline: bool, settings: set[str]) -> list[tuple[str, str, str]]:
    """``(label, method setting, baseline setting)``: each setting against the baseline's same one, and each
    Domain Guidance setting also against the baseline under CFG at that scale (what a user switching both
    the recipe and the sampler gets); the baseline itself only in the second kind (DG's own effect)."""
    out = [] if is_baseline else [(k, k, k) for k in sorted(settings, key=guidance_order)]
    out += [(f"{k} vs CFG", k, k.removesuffix(DOMAIN_SUFFIX)) for k in sorted(settings, key=guidance_order)
            if k.endswith(DOMAIN_SUFFIX)]
    return out


def collect(runs: list[dict[str, Any]], out: Path) -> tuple[np.ndarray | None, dict[str, dict[int, dict]]]:
    """The reference features under ``out`` and the final features of every run record that saved them."""
    real_path = Path(out) / REAL_FEATURES_FILE
    if not real_path.exists():
        return None, {}
    real = torch.load(real_path, weights_only=True).double().numpy()
    found: dict[str, dict[int, dict]] = {}
    for run in runs:
        features = load_features(Path(run["checkpoint"]).parents[1])  # RUN/checkpoints/step_N -> RUN
        if features is not None:
            found.setdefault(run["method"], {})[run["seed"]] = features
    return real, found


def markdown_table(paired: dict[str, dict[str, Any]], baseline: str = "standard") -> list[str]:
    """Report lines: one row per (method, setting) with the paired difference and its interval."""
    if not paired:
        return []
    lines = [f"## Paired differences vs `{baseline}` (final step)", "",
             "Per seed FD(method) − FD(baseline) with the same seeds and sampling noise; 95% interval from a "
             "hierarchical bootstrap (seeds, then samples and reference images). Seeds needed: a paired test "
             "at 0.05 with 80% power for a 5% difference, at this sample size and at 4× the samples.", "",
             "| method | setting | FD baseline → method | Δ mean (rel.) | 95% CI (rel.) | better seeds "
             "| sd Δ (sampling part) | seeds for 5% (4× samples) |",
             "|---|---|---|---|---|---|---|---|"]
    for method, per_setting in paired.items():
        for setting, c in per_setting.items():
            lines.append(
                f"| {method} | {setting} | {c['fd_baseline']:.2f} → {c['fd_method']:.2f} | "
                f"{c['diff_mean']:+.2f} ({c['rel_mean']:+.1%}) | [{c['rel_ci95'][0]:+.1%}, {c['rel_ci95'][1]:+.1%}] | "
                f"{c['better_seeds']}/{len(c['seeds'])} | {c['sd_diff']:.2f} ({c['sd_diff_sampling']:.2f}) | "
                f"{c['seeds_needed']} ({c['seeds_needed_4x_samples']}) |")
    return lines + [""]
