"""The Diff-Tuning method as small pure functions.

Reference behaviour (the authors' DiT fork): the chain-of-forgetting weights are realised by
*sampling* timesteps, not by multiplying the loss. Downstream (target) rows draw t with
p(t) ∝ (t+1)^s (towards high noise: reconsolidation), knowledge-bank rows draw t with
p(t) ∝ (T-t)^s' (towards low noise: retention). One forward pass serves both; the loss is
mean(target) + w · mean(bank). Standard fine-tuning is uniform t and no bank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#################################################################################
#                              Timestep distributions                           #
#################################################################################


def target_timestep_probs(num_timesteps: int, power: float) -> torch.Tensor:
    """p(t) ∝ (t+1)^power over t = 0..T-1 (power 0 = uniform)."""
    t = torch.arange(num_timesteps, dtype=torch.float64)
    weights = (t + 1.0) ** power  # (T,)
    return weights / weights.sum()


def bank_timestep_probs(num_timesteps: int, power: float) -> torch.Tensor:
    """p(t) ∝ (T-t)^power over t = 0..T-1: the mirror image of the target distribution."""
    return target_timestep_probs(num_timesteps, power).flip(0)


def sample_timesteps(
    probs: torch.Tensor, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw n timesteps from a categorical distribution over 0..T-1."""
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.multinomial(probs.float(), n, replacement=True, generator=generator)  # (n,)


#################################################################################
#                               Batch composition                               #
#################################################################################


@dataclass(frozen=True)
class BatchSplit:
    """How many rows of one batch come from the target data and from the knowledge bank."""

    target: int
    bank: int

    @property
    def total(self) -> int:
        return self.target + self.bank


def split_batch(batch_size: int, bank_share: float, uses_bank: bool) -> BatchSplit:
    """Reference split: ``int(batch * share)`` bank rows (6 of 32 at 0.2), the rest target rows."""
    bank = int(batch_size * bank_share) if uses_bank else 0
    if uses_bank and bank == 0 and bank_share > 0:
        bank = 1  # tiny batches still see the bank
    if bank >= batch_size:
        raise ValueError(f"bank_share {bank_share} leaves no target rows in a batch of {batch_size}")
    return BatchSplit(target=batch_size - bank, bank=bank)


def drop_labels(
    labels: torch.Tensor, null_label: int, drop_prob: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replace each label by the null label with probability ``drop_prob`` (CFG training)."""
    if drop_prob <= 0:
        return labels
    drop = torch.rand(labels.shape, generator=generator) < drop_prob  # (N,)
    return torch.where(drop.to(labels.device), torch.full_like(labels, null_label), labels)


#################################################################################
#                               Loss weighting                                  #
#################################################################################


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t) at the given timesteps."""
    a = alphas_cumprod.to(timesteps.device)[timesteps].double()
    return (a / (1.0 - a)).float()


def loss_weights(
    kind: str,
    alphas_cumprod: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    p2_gamma: float = 1.0,
    p2_k: float = 1.0,
    min_snr_gamma: float = 5.0,
) -> torch.Tensor:
    """Per-sample weights of an epsilon-prediction loss: ``none``, ``p2`` or ``min_snr``."""
    if kind == "none":
        return torch.ones(timesteps.shape, device=timesteps.device)
    ratio = snr(alphas_cumprod, timesteps)  # (N,)
    if kind == "p2":  # Choi et al. 2022: λ_t = 1 / (k + SNR)^γ
        return 1.0 / (p2_k + ratio) ** p2_gamma
    if kind == "min_snr":  # Hang et al. 2023, ε-prediction form: min(SNR, γ) / SNR
        return torch.clamp(ratio, max=min_snr_gamma) / ratio
    raise ValueError(f"unknown loss_weighting {kind!r}")


#################################################################################
#                                  Loss                                         #
#################################################################################


@dataclass(frozen=True)
class LossParts:
    """The combined loss and its two halves (detached halves for logging)."""

    total: torch.Tensor
    target: torch.Tensor
    bank: torch.Tensor | None


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per row, in fp32."""
    err = (prediction.float() - target.float()) ** 2  # (N, C, H, W)
    return err.flatten(1).mean(dim=1)  # (N,)


def combine_losses(per_sample: torch.Tensor, split: BatchSplit, bank_weight: float) -> LossParts:
    """mean(target rows) + bank_weight × mean(bank rows); rows are ordered target first."""
    target = per_sample[: split.target].mean()
    if split.bank == 0:
        return LossParts(total=target, target=target.detach(), bank=None)
    bank = per_sample[split.target :].mean()
    return LossParts(total=target + bank_weight * bank, target=target.detach(), bank=bank.detach())
