"""ControlNet on a frozen Stable Diffusion base: only the ControlNet trains.

Conditions are rows (text id, control id): text ids index the SD prompt table, control ids a table
of control images (N_target + M_bank, 3, H, W) in [0, 1]. The CFG drop replaces only the text.
The ControlNet starts from the base folder's ``controlnet/`` when there is one, else from the UNet
(``ControlNetModel.from_unet``). Target images are not flipped (their controls are not).

Knowledge bank: images sampled from the base SD with prompts, each paired with a control extracted
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


class ControlNetFamily(SDFamily):
    """A ControlNet tuned on (caption, control, image) triples over a frozen SD."""

    name = "controlnet"
    pipeline_class = StableDiffusionControlNetPipeline
    convergence_metric = "canny_f1"

    def __init__(self, controlnet: ControlNetModel, **parts: Any):
        super().__init__(**parts)
        self.unet.eval().requires_grad_(False)
        self.denoiser = controlnet.to(self.device)
        self.controls = torch.zeros(0)  # (N + M, 3, H, W)
        self.bank_control_offset = 0
        self.control_extractor = "canny"

    @classmethod
    def from_pretrained(cls, location: str, *, config: TrainConfig | None = None,
                        device: str = "cpu") -> ControlNetFamily:
        parts = cls.load_parts(location, "Stable Diffusion (+ ControlNet)")
        if (Path(location) / "controlnet").is_dir():
            try:
                controlnet = ControlNetModel.from_pretrained(location, subfolder="controlnet")
            except (OSError, ValueError) as err:
                raise ConfigError(f"base_model: cannot load {location}/controlnet: {err}") from err
        else:
            levels = len(parts["vae"].config.block_out_channels)
            with torch.random.fork_rng():  # a fresh ControlNet's random layers depend on the seed only
                torch.manual_seed(config.seed if config else 0)
                controlnet = ControlNetModel.from_unet(
                    parts["unet"], conditioning_embedding_out_channels=CONDITIONING_CHANNELS[:levels])
        return cls(controlnet, **parts, location=location, device=device)

    # --- controls -------------------------------------------------------------------------------------
    def uses_flip(self, config: TrainConfig) -> bool:
        return False

    def _target_controls(self, dataset, config: TrainConfig) -> torch.Tensor:
        """The dataset's conditioning images, or controls extracted from its images."""
        files = dataset.controls or dataset.files
        images = torch.stack([load_image(p, config.resolution) for p in files]).add(1).div(2)  # (N, 3, R, R)
        return images if dataset.controls else extract_control(images, config.control_extractor)

    @torch.no_grad()
    def _bank_controls(self, bank, config: TrainConfig, batch_size: int = 32) -> torch.Tensor:
        """Controls of the bank images: extracted like the target's, or blank with extractor ``none``."""
        size = self.image_size
        if config.control_extractor == "none":
            return torch.zeros(len(bank), 3, size, size)
        chunks = [extract_control(self.decode_latents(bank.latents[i : i + batch_size]), config.control_extractor)
                  for i in range(0, len(bank), batch_size)]
        return torch.cat(chunks)

    def prepare_target(self, dataset, config: TrainConfig, bank, *, cache_dir, progress=None):
        """SD's target set with (text id, control id) rows; bank conditions become such rows too."""
        latents = super().prepare_target(dataset, config, bank, cache_dir=cache_dir, progress=progress)
        self.control_extractor = config.control_extractor
        n = len(latents)
        tables = [self._target_controls(dataset, config)]
        latents.labels = torch.stack([latents.labels, torch.arange(n)], dim=1)  # (N, 2)
        self.bank_control_offset = n
        if bank is not None:
            tables.append(self._bank_controls(bank, config))
            if bank.conditions.dim() == 1:
                bank.conditions = torch.stack([bank.conditions, torch.arange(len(bank))], dim=1)  # (M, 2)
        self.controls = torch.cat(tables).float()
        return latents

    # --- conditioning -----------------------------------------------------------------------------------
    def drop_conditions(self, cond: torch.Tensor, drop_prob: float, generator: torch.Generator) -> torch.Tensor:
        text = super().drop_conditions(cond[:, 0], drop_prob, generator)
        return torch.stack([text, cond[:, 1]], dim=1)

    def bank_conditions(self, bank_cond: torch.Tensor) -> torch.Tensor:
        text = super().bank_conditions(bank_cond[:, 0])
        return torch.stack([text, bank_cond[:, 1] + self.bank_control_offset], dim=1)

    # --- denoising ------------------------------------------------------------------------------------
    def control_call(self, model: nn.Module, controls: torch.Tensor):
        """(x_t, t, text embeddings) -> ε of the frozen UNet steered by ControlNet ``model``."""
        controls = controls.to(self.device)

        def call(x, t, emb):
            text = emb["embeds"]
            down, mid = model(x, t, encoder_hidden_states=text, controlnet_cond=controls.to(x.dtype),
                              return_dict=False)
            return self.unet(x, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                             mid_block_additional_residual=mid).sample  # (N, C, h, w)

        return call

    def model_call(self, model: nn.Module, controls: torch.Tensor | None = None):
        if controls is None:
            raise ValueError("control: a ControlNet samples from control images; give one per prompt")
        return self.control_call(model, controls)

    def predict(self, model: nn.Module, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        controls = self.controls[cond[:, 1].cpu()]  # (N, 3, H, W)
        return self.control_call(model, controls)(noisy, t, self.embeddings(cond[:, 0]))

    # --- validation -------------------------------------------------------------------------------------
    def validation_set(self, config: TrainConfig) -> tuple[list[str], torch.Tensor]:
        """Fixed (prompts, controls): the first target rows, with ``validation_prompts`` if given."""
        n = min(MAX_VALIDATION_PROMPTS, self.bank_control_offset)
        prompts = list(config.validation_prompts or self.captions[:n])[:n]
        return prompts, self.controls[: len(prompts)]

    @torch.no_grad()
    def generate(self, model: nn.Module, config: TrainConfig, generator: torch.Generator):
        """(controls, images) of the validation set, both (n, 3, H, W) in [0, 1]."""
        prompts, controls = self.validation_set(config)
        images = self.generate_images(model, prompts, guidance=config.validation_guidance_scale,
                                      steps=config.sample_steps, generator=generator, controls=controls)
        return controls, images

    def sample_grid(self, model: nn.Module, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
        controls, images = self.generate(model, config, generator)
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
