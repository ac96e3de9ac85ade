"""Paired differences, bootstrap intervals and seeds needed (bench.transfer_stats)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.transfer_stats import _fd, _root, _stats, markdown_table, paired_analysis, seeds_needed
from models.evaluation.frechet import frechet_distance


def _features(n: int, shift: float, seed: int, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)) + shift


def test_fast_fd_is_the_frechet_distance():
    real, gen = _features(300, 0.0, 0), _features(200, 0.4, 1)
    mu, sigma = _stats(real)
    assert _fd(mu, _root(sigma), float(np.trace(sigma)), gen) == pytest.approx(frechet_distance(real, gen), rel=1e-9)


def test_seeds_needed_is_the_paired_normal_sample_size():
    # ((1.96 + 0.84) * sd / delta)^2: sd = delta gives 7.85 -> 8 seeds; sd = 2 delta gives 31.4 -> 32
    assert seeds_needed(1.0, 1.0) == 8
    assert seeds_needed(2.0, 1.0) == 32
    assert seeds_needed(0.0, 1.0) == 2  # never fewer than two seeds
    assert seeds_needed(1.0, 0.0) is None


def _runs(shift_method: float, seeds: int = 4, n: int = 150):
    """Baseline samples near the real set, the method's shifted by ``shift_method``; same noise per seed."""
    runs = {"standard": {}, "better": {}}
    for s in range(seeds):
        noise = _features(n, 0.0, 100 + s)
        runs["standard"][s] = {"1": noise + 0.5}
        runs["better"][s] = {"1": noise + shift_method}
    return runs


def test_a_clearly_better_method_has_an_interval_below_zero():
    real = _features(400, 0.0, 7)
    out = paired_analysis(real, _runs(0.1), boots=100)["better"]["1"]
    assert out["better_seeds"] == 4 and out["seeds"] == [0, 1, 2, 3]
    assert out["rel_mean"] < -0.5
    assert out["rel_ci95"][1] < 0  # the whole interval says "better"
    assert len(out["diff_per_seed"]) == 4
    assert out["fd_method"] < out["fd_baseline"]
    assert out["seeds_needed"] >= 2


def test_the_same_samples_differ_by_exactly_zero():
    """Pairing: a method whose samples equal the baseline's has a zero difference in every resample."""
    real = _features(400, 0.0, 7)
    runs = _runs(0.5)  # the method's samples are the baseline's
    out = paired_analysis(real, runs, boots=50)["better"]["1"]
    assert out["diff_mean"] == 0 and out["rel_ci95"] == [0.0, 0.0] and out["sd_diff_sampling"] == 0


def test_only_seeds_both_methods_ran_are_paired_and_the_table_names_them():
    real = _features(400, 0.0, 7)
    runs = _runs(0.1)
    del runs["standard"][3]
    paired = paired_analysis(real, runs, boots=30)
    assert paired["better"]["1"]["seeds"] == [0, 1, 2]
    table = "\n".join(markdown_table(paired))
    assert "| better | 1 |" in table and "3/3" in table
