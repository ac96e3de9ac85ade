"""The Diff-Tuning pieces pin the reference numbers (README, "What this is")."""

from __future__ import annotations

import pytest
import torch

from models.difftune import (
    BatchSplit,
    bank_timestep_probs,
    combine_losses,
    drop_labels,
    loss_weights,
    per_sample_mse,
    sample_timesteps,
    split_batch,
    target_timestep_probs,
)

T = 1000


def test_target_distribution_is_proportional_to_t_plus_one():
    p = target_timestep_probs(T, 1.0)
    assert p.shape == (T,)
    assert p.sum().item() == pytest.approx(1.0)
    assert p[999] / p[0] == pytest.approx(1000.0)  # (999+1)^1 / (0+1)^1
    mean = (torch.arange(T, dtype=torch.float64) * p).sum().item()
    assert mean == pytest.approx(666.0, abs=1e-6)  # (Σu² − Σu) / Σu over u = 1..1000


def test_bank_distribution_mirrors_target():
    p = bank_timestep_probs(T, 1.0)
    assert p[0] / p[999] == pytest.approx(1000.0)  # (1000-0) / (1000-999)
    mean = (torch.arange(T, dtype=torch.float64) * p).sum().item()
    assert mean == pytest.approx(333.0, abs=1e-6)


def test_power_zero_is_uniform_and_power_two_is_steeper():
    assert torch.allclose(target_timestep_probs(T, 0.0), torch.full((T,), 1 / T, dtype=torch.float64))
    mean2 = (torch.arange(T, dtype=torch.float64) * target_timestep_probs(T, 2.0)).sum().item()
    assert mean2 > 740  # E[t] ≈ 3/4 T for p ∝ t²


def test_empirical_means_of_sampled_timesteps():
    gen = torch.Generator().manual_seed(0)
    target = sample_timesteps(target_timestep_probs(T, 1.0), 200_000, gen).double()
    bank = sample_timesteps(bank_timestep_probs(T, 1.0), 200_000, gen).double()
    assert target.mean().item() == pytest.approx(666, abs=3)
    assert bank.mean().item() == pytest.approx(333, abs=3)
    assert target.min() >= 0 and target.max() <= 999


def test_reference_batch_split():
    assert split_batch(32, 0.2, uses_bank=True) == BatchSplit(target=26, bank=6)
    assert split_batch(32, 0.2, uses_bank=False) == BatchSplit(target=32, bank=0)
    assert split_batch(4, 0.2, uses_bank=True) == BatchSplit(target=3, bank=1)  # tiny batches keep a bank row
    with pytest.raises(ValueError, match="no target rows"):
        split_batch(1, 0.5, uses_bank=True)


def test_loss_is_target_mean_plus_weighted_bank_mean():
    per_sample = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0])
    parts = combine_losses(per_sample, BatchSplit(target=3, bank=2), bank_weight=0.1)
    assert parts.target.item() == pytest.approx(2.0)
    assert parts.bank.item() == pytest.approx(15.0)
    assert parts.total.item() == pytest.approx(2.0 + 0.1 * 15.0)
    standard = combine_losses(per_sample[:3], BatchSplit(target=3, bank=0), bank_weight=0.1)
    assert standard.bank is None and standard.total.item() == pytest.approx(2.0)


def test_per_sample_mse():
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.stack([torch.ones(1, 2, 2), 2 * torch.ones(1, 2, 2)])
    assert per_sample_mse(pred, target).tolist() == [1.0, 4.0]


def test_label_drop_rate_and_null_value():
    gen = torch.Generator().manual_seed(0)
    labels = torch.zeros(100_000, dtype=torch.long)
    dropped = drop_labels(labels, null_label=1000, drop_prob=0.1, generator=gen)
    assert set(dropped.unique().tolist()) == {0, 1000}
    assert (dropped == 1000).double().mean().item() == pytest.approx(0.1, abs=0.005)
    assert torch.equal(drop_labels(labels[:10], 1000, 0.0, gen), labels[:10])


def test_loss_weight_baselines():
    alphas = torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64)
    t = torch.tensor([0, 1, 2])
    snr = torch.tensor([9.0, 1.0, 1 / 9])
    assert torch.equal(loss_weights("none", alphas, t), torch.ones(3))
    assert torch.allclose(loss_weights("p2", alphas, t, p2_gamma=1.0, p2_k=1.0), 1 / (1 + snr), atol=1e-6)
    assert torch.allclose(loss_weights("min_snr", alphas, t, min_snr_gamma=5.0),
                          torch.clamp(snr, max=5.0) / snr, atol=1e-6)
    with pytest.raises(ValueError, match="unknown loss_weighting"):
        loss_weights("bogus", alphas, t)
