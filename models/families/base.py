"""The contract between a model family and the shared Trainer.

A family owns everything model-specific: loading, conditioning (labels, prompts), encoding images
to latents, the denoiser's forward call, the training target and sampling. The Trainer owns the
loop, the Diff-Tuning batch, EMA, checkpoints, resume, DDP and progress.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.config import TrainConfig

# A denoising function (x_t, t) -> model output, used by samplers; families build one per model.
PredictFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fingerprint_module(module: nn.Module) -> str:
    """sha256 over a module's parameter names, shapes, dtypes and bytes (a stable identity)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class Family(ABC):
    """A diffusion model family (DiT, Stable Diffusion, ControlNet) seen by the Trainer."""

    name: str = "base"
    denoiser: nn.Module  # the network being tuned
    noise_scheduler: Any  # diffusers DDPM-style scheduler used for training
    base_fingerprint: str  # identity of the pre-trained weights (knowledge-bank cache key)

    # --- conditioning ------------------------------------------------------------------------------
    @abstractmethod
    def drop_conditions(self, cond: Any, drop_prob: float, generator: torch.Generator) -> Any:
        """Replace a share of target conditions by the unconditional one (CFG training)."""

    @abstractmethod
    def bank_conditions(self, bank_cond: Any) -> Any:
        """Conditions the knowledge-bank rows are trained with (e.g. always the null label)."""

    @abstractmethod
    def concat_conditions(self, a: Any, b: Any) -> Any:
        """Stack target and bank conditions along the batch dimension."""

    @abstractmethod
    def index_conditions(self, cond: Any, index: torch.Tensor) -> Any:
        """Select rows of a stored condition set."""

    # --- denoising --------------------------------------------------------------------------------
    @abstractmethod
    def predict(self, model: nn.Module, noisy: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """Run the denoiser and return its prediction with the latent's channels."""

    def training_target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser regresses: ε or v, after the scheduler's prediction type."""
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, t)
        raise ValueError(f"unsupported prediction_type {kind!r}")

    @property
    def num_timesteps(self) -> int:
        return int(self.noise_scheduler.config.num_train_timesteps)

    # --- data -------------------------------------------------------------------------------------
    @abstractmethod
    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] (N, 3, H, W) -> latent posterior mean and std, scaled for training."""

    @abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Training-scale latents -> images in [0, 1] (N, 3, H, W)."""

    # --- sampling and export ----------------------------------------------------------------------
    @abstractmethod
    def generate_bank_batch(self, n: int, config: TrainConfig, generator: torch.Generator) -> tuple[torch.Tensor, Any]:
        """Sample n latents from the *base* model for the knowledge bank, with their conditions."""

    @abstractmethod
    def sample_grid(self, model: nn.Module, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
        """Validation images in [0, 1] (N, 3, H, W) from a tuned denoiser."""

    @abstractmethod
    def save_pretrained(self, model: nn.Module, path: Path) -> None:
        """Write a diffusers-format pipeline folder with the given denoiser weights."""

    def export_denoiser(self, model: nn.Module) -> nn.Module:
        """A plain diffusers module for saving (PEFT helpers merged); identity by default."""
        return model

    def metadata(self) -> dict[str, Any]:
        """Family facts stored in meta.json (label maps, base model, ...)."""
        return {"family": self.name, "base_fingerprint": self.base_fingerprint}
