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

from contract.families import Resolutions
from contract.train_config import ConfigError, TrainConfig
from models.noise import DiscreteProcess, NoiseProcess
from models.precision import autocast
from models.sampling import denoise, initial_noise, make_sampler


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
    noise_scheduler: Any  # the diffusers scheduler of the base model's training (DDPM or flow matching)
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

    def noise_process(self, config: TrainConfig) -> NoiseProcess:
        """How training examples are noised (DDPM over ``noise_scheduler`` unless a family overrides)."""
        return DiscreteProcess(self.noise_scheduler, config)

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
    def generate_bank_batch(self, n: int, config: TrainConfig, generator: torch.Generator, *,
                            size: tuple[int, int] | None = None) -> tuple[torch.Tensor, Any]:
        """Sample n latents from the *base* model for the knowledge bank, with their conditions; ``size``
        (H, W) pixels for a bucket of an aspect-ratio bucketed run (else the trained square)."""

    @abstractmethod
    def sample_grid(self, model: nn.Module, config: TrainConfig, generator: torch.Generator, *,
                    base=None) -> torch.Tensor:
        """Validation images in [0, 1] (N, 3, H, W) from a tuned denoiser; with ``base`` (the pre-trained
        denoiser) guided by Domain Guidance instead of CFG (``models/domain_guidance.py``)."""

    def pretrained_denoiser(self) -> nn.Module | None:
        """The pre-trained denoiser when the family holds it anyway (ControlNet's frozen UNet), else None."""
        return None

    @abstractmethod
    def save_pretrained(self, model: nn.Module, path: Path) -> None:
        """Write a diffusers-format pipeline folder with the given denoiser weights."""

    def export_denoiser(self, model: nn.Module) -> nn.Module:
        """A plain diffusers module for saving: DiffFit γ folded in, LoRA merged or dropped."""
        from models.peft import export_trainable

        return export_trainable(model)

    def metadata(self) -> dict[str, Any]:
        """Family facts stored in meta.json (label maps, base model, ...)."""
        return {"family": self.name, "base_fingerprint": self.base_fingerprint}

    # --- run hooks (defaults suit a family with nothing to add) -----------------------------------
    def attach_dataset(self, dataset: Any, config: TrainConfig) -> None:
        """Read what the knowledge bank needs from the dataset (before the bank; the model is unchanged)."""
        return None

    def bank_key_fields(self) -> dict[str, Any]:
        """Extra facts that change the bank's content (e.g. its prompts), part of its cache key."""
        return {}

    @abstractmethod
    def prepare_target(self, dataset: Any, config: TrainConfig, bank: Any, *, cache_dir: Path | None,
                       progress: Callable[[int, int], None] | None = None) -> Any:
        """Set up conditions for the target and encode it: returns the target ``LatentSet``."""

    convergence_metric: str | None = None  # name of the metric ``evaluate`` returns, if any

    def evaluate(self, model: nn.Module, config: TrainConfig, generator: torch.Generator) -> dict[str, float]:
        """Condition-following metrics of a tuned denoiser on a fixed validation set (none by default)."""
        return {}


#################################################################################
#                        Families on AutoencoderKL latents                      #
#################################################################################


class LatentFamily(Family):
    """Shared VAE plumbing of latent diffusion families (DiT, SD, ControlNet)."""

    vae: nn.Module
    device: torch.device
    scheduler_config: dict
    resolution: int | None = None  # set by families that train at any size (else the base model's size)

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def sized_module(self) -> nn.Module:
        """The network whose ``sample_size`` fixes the latent size."""
        return self.denoiser

    @property
    def image_size(self) -> int:
        """Pixel size trained at: the configured one, or the base model's native size."""
        return self.resolution or self.resolutions().native

    @torch.no_grad()
    def sample_chain(self, predict, n: int, *, steps: int, sampler: str, generator: torch.Generator,
                     per_step: bool = False, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Run the reverse chain from fresh noise for ``n`` latents (of ``size`` (H, W) pixels, else the
        trained square); ``per_step`` as in ``denoise``."""
        x = initial_noise((n, *self.latent_shape_at(size)), generator, self.device)  # (N, C, h, w)
        scheduler = self.inference_scheduler(sampler, steps)
        with autocast(self.device):
            x = denoise(predict, x, scheduler, generator=generator, per_step=per_step)
        return x.float()

    def resolutions(self) -> Resolutions:
        """The sizes this base model trains at (default: only its native size)."""
        return Resolutions(native=int(self.sized_module.config.sample_size) * self.vae_factor)

    def check_resolution(self) -> None:
        """A ``ConfigError`` naming ``resolution`` when the configured size cannot be trained."""
        problem = self.resolution and self.resolutions().problem(self.resolution)
        if problem:
            raise ConfigError(f"resolution: {problem}")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one training latent."""
        return self.latent_shape_at(None)

    def latent_shape_at(self, size: tuple[int, int] | None) -> tuple[int, int, int]:
        """(C, h, w) of the latent of a (H, W) pixel image (None: the trained square)."""
        height, width = size or (self.image_size, self.image_size)
        return int(self.vae.config.latent_channels), height // self.vae_factor, width // self.vae_factor

    def bucket_resolutions(self) -> Resolutions | None:
        """The sides aspect-ratio buckets may have (None: this family trains one square size)."""
        resolutions = self.resolutions()
        return resolutions if resolutions.multiple else None

    def inference_scheduler(self, sampler: str, steps: int):
        """A fresh scheduler for one reverse chain of ``steps`` steps (``sampler``: ddim | ddpm)."""
        return make_sampler(sampler, self.scheduler_config, steps)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        """The VAE's latent shift (SD3, Flux); 0 for SD-style VAEs."""
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist
        mean = (dist.mean.float() - self.shift_factor) * self.scaling_factor
        return mean.cpu(), (dist.std.float() * self.scaling_factor).cpu()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        latents = latents.to(self.device, self.vae.dtype) / self.scaling_factor + self.shift_factor
        images = self.vae.decode(latents).sample  # (N, 3, H, W)
        return ((images.float() + 1) / 2).clamp(0, 1).cpu()
