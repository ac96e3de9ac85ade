"""Diff-Tuning in continuous time, for flow-matching families (SD3/SD3.5, Flux.1).

These models train on a noise level σ ∈ (0, 1): x_σ = (1 − σ)·x₀ + σ·ε with the velocity ε − x₀
as target, σ drawn from the family's *native* density q(σ) (SD3: logit-normal; Flux: with a
resolution-dependent shift). Diff-Tuning's chain of forgetting carries over as two σ densities
composed with q:

    target rows (reconsolidation):  p(σ) ∝ q(σ) · σ^s        (towards high noise)
    bank rows   (retention):        p(σ) ∝ q(σ) · (1 − σ)^s'  (towards low noise)

so s = s' = 0 is exactly the family's standard training, and the batch split and bank weight are the
reference's (``models.difftune``). Sampling is exact: a native draw is kept with probability σ^s
(or (1 − σ)^s), which is ≤ 1 on (0, 1), and drawing repeats until every row has one.
``stream_mean_sigma`` gives each stream's mean σ by quadrature, for documentation and tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

Stream = Literal["target", "bank"]
MAX_ROUNDS = 10_000  # a guard, never reached for powers within TrainConfig's bounds (≤ 8)


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3/Flux time shift σ' = shift·σ / (1 + (shift − 1)·σ) (shift 1: unchanged; > 1: noisier)."""
    return sigmas if shift == 1.0 else shift * sigmas / (1 + (shift - 1) * sigmas)


@dataclass(frozen=True)
class SigmaDensity:
    """A family's native σ density: one of the SD3 paper's schemes (diffusers'
    ``compute_density_for_timestep_sampling``: ``uniform``, ``logit_normal``, ``mode``), then a shift."""

    scheme: Literal["uniform", "logit_normal", "mode"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    shift: float = 1.0

    def __post_init__(self):
        if self.logit_std <= 0 or self.shift <= 0:
            raise ValueError("logit_std and shift must be positive")

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` native draws of σ in (0, 1), float32 on the CPU."""
        u = compute_density_for_timestep_sampling(self.scheme, n, logit_mean=self.logit_mean,
                                                  logit_std=self.logit_std, mode_scale=self.mode_scale,
                                                  generator=generator)
        return shift_sigmas(u.float(), self.shift)

    def _quadrature(self, points: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(σ nodes, probability weights) that integrate against q."""
        if self.scheme == "logit_normal":  # over the standard normal variable z
            z = torch.linspace(-9, 9, points, dtype=torch.float64)
            weights = torch.exp(-z**2 / 2)
            u = torch.sigmoid(self.logit_mean + self.logit_std * z)
        else:  # over u ~ U(0, 1), midpoints
            v = (torch.arange(points, dtype=torch.float64) + 0.5) / points
            weights = torch.ones_like(v)
            u = v if self.scheme == "uniform" else 1 - v - self.mode_scale * (torch.cos(math.pi * v / 2) ** 2 - 1 + v)
        return shift_sigmas(u, self.shift), weights / weights.sum()


def stream_weight(sigmas: torch.Tensor, power: float, stream: Stream) -> torch.Tensor:
    """The unnormalised factor each stream multiplies q by: σ^s (target) or (1 − σ)^s (bank)."""
    if power < 0:
        raise ValueError(f"power must be ≥ 0 (got {power})")
    base = sigmas if stream == "target" else 1 - sigmas
    return base.clamp(min=0.0) ** power


def sample_stream_sigmas(density: SigmaDensity, n: int, power: float, stream: Stream,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` draws of σ from q(σ)·σ^s (target) or q(σ)·(1 − σ)^s (bank); power 0 is q itself
    (the very same draws as ``density.sample`` with the same generator)."""
    if stream not in ("target", "bank"):
        raise ValueError(f"stream must be 'target' or 'bank' (got {stream!r})")
    if n == 0:
        return torch.zeros(0)
    if power == 0:
        stream_weight(torch.zeros(0), power, stream)  # validates the power
        return density.sample(n, generator)
    kept: list[torch.Tensor] = []
    have = 0
    for _ in range(MAX_ROUNDS):
        proposal = density.sample(max(2 * (n - have), 64), generator)
        accept = torch.rand(proposal.shape, generator=generator) < stream_weight(proposal, power, stream)
        kept.append(proposal[accept])
        have += int(accept.sum())
        if have >= n:
            return torch.cat(kept)[:n]
    raise RuntimeError(f"could not draw {n} σ for power {power}: the density leaves almost no mass there")


def stream_mean_sigma(density: SigmaDensity, power: float, stream: Stream, points: int = 200_001) -> float:
    """E[σ] under a stream's density, by quadrature (what each stream focuses on)."""
    sigmas, weights = density._quadrature(points)
    weights = weights * stream_weight(sigmas, power, stream)
    return float((sigmas * weights).sum() / weights.sum())


def noisy_input(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """x_σ = (1 − σ)·x₀ + σ·ε, σ broadcast over each row's remaining dimensions."""
    s = sigmas.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching regression target ε − x₀."""
    return noise - x0


def loss_weights(scheme: Literal["none", "sigma_sqrt", "cosmap"], sigmas: torch.Tensor) -> torch.Tensor:
    """Per-row loss weights of the SD3 paper's schemes (diffusers' ``compute_loss_weighting_for_sd3``);
    ``none`` is the native recipe, the others are baselines to compare against."""
    if scheme not in ("none", "sigma_sqrt", "cosmap"):
        raise ValueError(f"unknown loss weighting {scheme!r}")
    return compute_loss_weighting_for_sd3(scheme, sigmas=sigmas)
