"""How a family turns clean latents into a training example: noise levels, noising, target, weights.

Two processes, one per training objective:

- :class:`DiscreteProcess`: DDPM integer timesteps t ∈ 0..T−1 and an ε or v target (DiT, SD, SDXL,
  ControlNet). Diff-Tuning draws target rows with p(t) ∝ (t+1)^s and bank rows with p(t) ∝ (T−t)^s'.
- :class:`FlowProcess`: a continuous σ ∈ (0, 1) and the velocity target (SD3/SD3.5, Flux.1).
  Diff-Tuning draws target rows from q(σ)·σ^s and bank rows from q(σ)·(1−σ)^s' over the family's
  native density q (``models/flow_matching.py``).

The Trainer asks a family for its process once (``Family.noise_process``) and never looks inside.
A level is what the process samples (t or σ); ``model_time`` is what the denoiser and the family's
sampler receive (the scheduler's timestep convention: t, or σ·1000 for flow matching).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from contract.train_config import TrainConfig
from models import difftune
from models import flow_matching as fm

Stream = fm.Stream


def stream_powers(config: TrainConfig) -> dict[str, float]:
    """The chain-of-forgetting power of each stream: s for target rows (0 for standard tuning), s' for bank rows."""
    return {"target": config.target_power if config.method == "difftune" else 0.0,
            "bank": config.effective_bank_power}


class NoiseProcess(ABC):
    """Noise levels, the noised input, the regression target and per-row loss weights."""

    @abstractmethod
    def sample_levels(self, n: int, stream: Stream, generator: torch.Generator) -> torch.Tensor:
        """``n`` noise levels for rows of ``stream`` (drawn on the CPU generator)."""

    @abstractmethod
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """The noised input at ``levels``."""

    @abstractmethod
    def target(self, x0: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """What the denoiser regresses."""

    @abstractmethod
    def loss_weights(self, levels: torch.Tensor) -> torch.Tensor:
        """Per-row weights of the squared error (the config's ``loss_weighting``)."""

    def model_time(self, levels: torch.Tensor) -> torch.Tensor:
        """The timestep the denoiser is called with."""
        return levels


class DiscreteProcess(NoiseProcess):
    """DDPM training over a diffusers scheduler's ᾱ_t (``epsilon`` or ``v_prediction``)."""

    def __init__(self, scheduler: Any, config: TrainConfig):
        self.scheduler, self.config = scheduler, config
        steps = int(scheduler.config.num_train_timesteps)
        powers = stream_powers(config)
        self.probs = {"target": difftune.target_timestep_probs(steps, powers["target"]),
                      "bank": difftune.bank_timestep_probs(steps, powers["bank"])}

    def sample_levels(self, n: int, stream: Stream, generator: torch.Generator) -> torch.Tensor:
        return difftune.sample_timesteps(self.probs[stream], n, generator)  # (n,) long

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(x0, noise, levels)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.scheduler.get_velocity(x0, noise, levels)
        raise ValueError(f"unsupported prediction_type {kind!r}")

    def loss_weights(self, levels: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return difftune.loss_weights(cfg.loss_weighting, self.scheduler.alphas_cumprod, levels,
                                     p2_gamma=cfg.p2_gamma, p2_k=cfg.p2_k, min_snr_gamma=cfg.min_snr_gamma)


class FlowProcess(NoiseProcess):
    """Rectified-flow training: x_σ = (1−σ)·x₀ + σ·ε, velocity target, σ from the streams' densities."""

    def __init__(self, density: fm.SigmaDensity, config: TrainConfig, num_train_timesteps: int = 1000):
        self.density, self.config = density, config
        self.powers = stream_powers(config)
        self.timescale = float(num_train_timesteps)

    def sample_levels(self, n: int, stream: Stream, generator: torch.Generator) -> torch.Tensor:
        return fm.sample_stream_sigmas(self.density, n, self.powers[stream], stream, generator)  # (n,) float

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        return fm.noisy_input(x0, noise, levels)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        return fm.velocity_target(x0, noise)

    def loss_weights(self, levels: torch.Tensor) -> torch.Tensor:
        return fm.loss_weights(self.config.loss_weighting, levels).to(levels.device)

    def model_time(self, levels: torch.Tensor) -> torch.Tensor:
        return levels * self.timescale


def flow_density(config: TrainConfig, native: fm.SigmaDensity) -> fm.SigmaDensity:
    """The σ density a run trains with: the family's ``native`` one, or the config's ``sigma_density``
    scheme (with the native shift)."""
    if config.sigma_density == "native":
        return native
    return fm.SigmaDensity(config.sigma_density, logit_mean=config.logit_mean, logit_std=config.logit_std,
                           mode_scale=config.mode_scale, shift=native.shift)
