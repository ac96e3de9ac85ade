"""ControlNet on a frozen text-to-image UNet: only the ControlNet trains.

:class:`ControlNetMixin` holds what does not depend on the base: loading the ControlNet, controls, the
condition layout, the ControlNet forward, the canny-F1 metric and export. :class:`ControlNetFamily` mixes
it into Stable Diffusion, ``models/families/sdxl_controlnet.py`` into SDXL.

Conditions are the base family's conditions with a control id appended as the last column: for SD rows
(text id, control id). Control ids index a table of control images (N_target + M_bank, 3, H, W) in
[0, 1]. The CFG drop changes only the text. The ControlNet starts from the base folder's
``controlnet/`` when there is one, else from the UNet (``ControlNetModel.from_unet``). Target images
are not flipped (their controls are not).

Knowledge bank: images sampled from the base model with prompts, each paired with a control extracted
from it the same way as the target's (``control_extractor``: canny or grayscale), so retention
teaches the ControlNet to follow controls on the base model's own images at low noise. With
``control_extractor: none`` (user-supplied controls of unknown kind) bank rows get a blank control.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from torch import nn

from contract.train_config import ConfigError, TrainConfig
from models.control import canny_f1, extract_control
from models.data import load_image
from models.families.sd import MAX_VALIDATION_PROMPTS, SDFamily
from models.lora import save_lora

CONDITIONING_CHANNELS = (16, 32, 96, 256)  # diffusers' default: one entry per VAE level


def load_controlnet(location: str, unet: nn.Module, vae: nn.Module, seed: int = 0) -> ControlNetModel:
    """The folder's ``controlnet/``, or a fresh ControlNet made from ``unet`` (random layers seeded)."""
    if (Path(location) / "controlnet").is_dir():
        try:
            return ControlNetModel.from_pretrained(location, subfolder="controlnet")
        except (OSError, ValueError) as err:
            raise ConfigError(f"base_model: cannot load {location}/controlnet: {err}") from err
    levels = len(vae.config.block_out_channels)
    with torch.random.fork_rng():  # a fresh ControlNet's random layers depend on the seed only
        torch.manual_seed(seed)
        return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS[:levels])


def text_conditions(cond: torch.Tensor) -> torch.Tensor:
    """The base family's part of ControlNet conditions (N, K + 1): (N,) prompt ids or (N, K) rows."""
    return cond[:, :-1].squeeze(1)


def with_controls(text: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
    """Base conditions (N,) or (N, K) and control ids (N,) -> ControlNet conditions (N, K + 1)."""
    return torch.cat([text.view(len(text), -1), control.view(-1, 1)], dim=1)


class ControlNetMixin:
    """A ControlNet tuned on (caption, control, image) triples over a frozen text family's ``unet``; mix it
    in before the family, which provides ``base_parts`` (its loaded components)."""

    convergence_metric = "canny_f1"

    def __init__(self, controlnet: ControlNetModel, **parts: Any):
        super().__init__(**parts)
        self.unet.eval().requires_grad_(False)
        self.denoiser = controlnet.to(self.device)
        self.controls: list[torch.Tensor] = []  # N + M control images (3, H, W), each at its row's size
        self.validation_controls = torch.zeros(0)  # (n, 3, R, R): the first rows' at the trained square
        self.bank_control_offset = 0
        self.control_extractor = "canny"

    @classmethod
    def base_parts(cls, location: str, *, config: TrainConfig | None, device: str) -> dict[str, Any]:
        """Keyword arguments of the base family's ``__init__`` loaded from ``location``."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, location: str, *, config: TrainConfig | None = None, device: str = "cpu"):
        parts = cls.base_parts(location, config=config, device=device)
        controlnet = load_controlnet(location, parts["unet"], parts["vae"], config.seed if config else 0)
        return cls(controlnet, **parts, location=location, device=device)

    # --- controls -------------------------------------------------------------------------------------
    def uses_flip(self, config: TrainConfig) -> bool:
        return False

    def _target_controls(self, dataset, config: TrainConfig, sizes: list) -> list[torch.Tensor]:
        """The dataset's conditioning images, or controls extracted from its images, fitted to ``sizes``
        (each row's bucket (H, W), or the square side): (3, H, W) each in [0, 1]."""
        files = dataset.controls or dataset.files
        images = [load_image(p, size).add(1).div(2) for p, size in zip(files, sizes, strict=False)]
        return images if dataset.controls else [extract_control(i[None], config.control_extractor)[0] for i in images]

    @torch.no_grad()
    def _bank_controls(self, bank, config: TrainConfig, batch_size: int = 32) -> list[torch.Tensor]:
        """Controls of the bank images: extracted like the target's, or blank with extractor ``none``."""
        if config.control_extractor == "none":
            return [torch.zeros(3, *self.decode_size(bank.latents[:1])) for _ in range(len(bank))]
        chunks = [extract_control(self.decode_latents(bank.latents[i : i + batch_size]), config.control_extractor)
                  for i in range(0, len(bank), batch_size)]
        return list(torch.cat(chunks).float())

    def decode_size(self, latents: torch.Tensor) -> tuple[int, int]:
        """(H, W) pixels of the images of latents (N, C, h, w)."""
        return latents.shape[-2] * self.vae_factor, latents.shape[-1] * self.vae_factor

    def prepare_target(self, dataset, config: TrainConfig, bank, *, cache_dir, progress=None):
        """The base family's target set with a control id appended to its rows; bank conditions become
        (bank condition, control id) rows, bucket by bucket for a bank across aspect-ratio buckets."""
        latents = super().prepare_target(dataset, config, bank, cache_dir=cache_dir, progress=progress)
        self.control_extractor = config.control_extractor
        n, square = len(latents), config.resolution
        self.controls = self._target_controls(dataset, config, dataset.sizes or [square] * n)
        first = min(MAX_VALIDATION_PROMPTS, n)
        self.validation_controls = torch.stack(self._target_controls(dataset, config, [square] * first)
                                                if dataset.sizes else self.controls[:first])
        latents.labels = with_controls(latents.labels, torch.arange(n))  # (N, K + 1)
        self.bank_control_offset = n
        for part in [] if bank is None else getattr(bank, "parts", [bank]):
            offset = len(self.controls) - n
            self.controls += self._bank_controls(part, config)
            if not getattr(part, "with_control_ids", False):
                part.conditions = with_controls(part.conditions, offset + torch.arange(len(part)))  # (M, K + 1)
                part.with_control_ids = True
        return latents

    def control_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Control images (n, 3, H, W) of control ids (n,) (one size: a batch is one bucket)."""
        return torch.stack([self.controls[i] for i in ids.tolist()])

    # --- conditioning -----------------------------------------------------------------------------------
    def drop_conditions(self, cond: torch.Tensor, drop_prob: float, generator: torch.Generator) -> torch.Tensor:
        text = super().drop_conditions(text_conditions(cond), drop_prob, generator)
        return with_controls(text, cond[:, -1])

    def bank_conditions(self, bank_cond: torch.Tensor) -> torch.Tensor:
        text = super().bank_conditions(text_conditions(bank_cond))
        return with_controls(text, bank_cond[:, -1] + self.bank_control_offset)

    # --- denoising ------------------------------------------------------------------------------------
    def control_call(self, model: nn.Module, controls: torch.Tensor):
        """(x_t, t, encoded prompts) -> ε of the frozen UNet steered by ControlNet ``model``."""
        controls = controls.to(self.device)

        def call(x, t, emb):
            text = self.unet_conditioning(emb)
            down, mid = model(x, t, controlnet_cond=controls.to(x.dtype), return_dict=False, **text)
            return self.unet(x, t, down_block_additional_residuals=down, mid_block_additional_residual=mid,
                             **text).sample  # (N, C, h, w)

        return call

    def model_call(self, model: nn.Module, controls: torch.Tensor | None = None):
        if controls is None:
            raise ValueError("control: a ControlNet samples from control images; give one per prompt")
        return self.control_call(model, controls)

    def predict(self, model: nn.Module, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        controls = self.control_rows(cond[:, -1].cpu())  # (N, 3, H, W)
        return self.control_call(model, controls)(noisy, t, self.embeddings(text_conditions(cond)))

    # --- validation -------------------------------------------------------------------------------------
    def validation_set(self, config: TrainConfig) -> tuple[list[str], torch.Tensor]:
        """Fixed (prompts, controls): the first target rows, with ``validation_prompts`` if given."""
        n = min(MAX_VALIDATION_PROMPTS, self.bank_control_offset)
        prompts = list(config.validation_prompts or self.captions[:n])[:n]
        return prompts, self.validation_controls[: len(prompts)]

    def pretrained_denoiser(self) -> nn.Module:
        """Domain Guidance's base: the frozen UNet without the ControlNet's residuals, on the empty prompt."""
        return self.unet

    @torch.no_grad()
    def generate(self, model: nn.Module, config: TrainConfig, generator: torch.Generator, base=None):
        """(controls, images) of the validation set, both (n, 3, H, W) in [0, 1]."""
        prompts, controls = self.validation_set(config)
        images = self.generate_images(model, prompts, guidance=config.validation_guidance_scale,
                                      steps=config.sample_steps, generator=generator, controls=controls, base=base)
        return controls, images

    def sample_grid(self, model: nn.Module, config: TrainConfig, generator: torch.Generator, *,
                    base=None) -> torch.Tensor:
        controls, images = self.generate(model, config, generator, base)
        return torch.cat([controls, images], dim=-1)  # (n, 3, H, 2W): condition | generated

    def evaluate(self, model: nn.Module, config: TrainConfig, generator: torch.Generator) -> dict[str, float]:
        controls, images = self.generate(model, config, generator)
        return {"canny_f1": canny_f1(images, controls, self.control_extractor)}

    # --- export -----------------------------------------------------------------------------------------
    def save_pretrained(self, model: nn.Module, path: Path) -> None:
        parts = {**self.pipeline_parts(), "unet": self.unet, "controlnet": self.export_denoiser(model)}
        self.pipeline_class(**parts).save_pretrained(path, safe_serialization=True)
        save_lora(model, path, "controlnet")

    def metadata(self) -> dict[str, Any]:
        blank = self.control_extractor == "none"
        return {**super().metadata(), "control_extractor": self.control_extractor,
                "bank_controls": "blank" if blank else f"extracted ({self.control_extractor})"}


class ControlNetFamily(ControlNetMixin, SDFamily):
    """A ControlNet over a frozen Stable Diffusion 1.x/2.x; conditions (text id, control id)."""

    name = "controlnet"
    pipeline_class = StableDiffusionControlNetPipeline

    @classmethod
    def base_parts(cls, location: str, *, config: TrainConfig | None, device: str) -> dict[str, Any]:
        return cls.load_parts(location, "Stable Diffusion (+ ControlNet)")
