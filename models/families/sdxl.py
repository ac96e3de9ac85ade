"""Stable Diffusion XL: a UNet with two CLIP text encoders and size/crop micro-conditioning.

Text: CLIP-L (penultimate layer) and CLIP-G (penultimate layer + pooled projection), encoded by diffusers'
own ``StableDiffusionXLPipeline.encode_prompt``: the prompt table holds ``embeds`` (P, L, D1 + D2) and
``pooled`` (P, D2). Row 0 is the null condition; when the base sets ``force_zeros_for_empty_prompt`` (as
SDXL 1.0 does: its unconditional branch at inference is zero embeddings) id 0 reads as zeros for both
tensors, so the CFG label drop and the bank's null label train what the pipeline samples against.

Micro-conditioning: every target image is recorded with SDXL's ``add_time_ids`` as the training scripts
of diffusers compute them: its original size (h, w) before any resizing, the top-left (y, x) of the centre
crop in the resized image (shorter side = resolution, as ``models/data.py::center_crop`` resizes), and the
target size (R, R). Conditions are rows of 7 integers (prompt id, orig_h, orig_w, crop_top, crop_left,
target_h, target_w); the CFG drop changes only the prompt id; bank rows and samples use (R, R, 0, 0, R, R),
what the pipeline passes at inference. A mirrored view (``random_flip``) keeps its row's crop offsets (a
centred crop's mirror image is off by at most one pixel).

Training is DDPM over the base's scheduler config (SDXL ships Euler's config: the same betas and
``prediction_type``); samples and the bank use DDIM/DDPM from that config, the checkpoint keeps the base's
scheduler class. The VAE is loaded and run in fp32, never under autocast: SDXL's VAE overflows in fp16
(``force_upcast``), and latents are encoded once and cached, so fp32 costs little. Any resolution that is
a multiple of the UNet's downsampling × the VAE factor trains (32 px for SDXL 1.0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from contract.buckets import Size, crop_geometry
from contract.families import Resolutions
from contract.train_config import TrainConfig
from models.families.components import frozen_dtype, load_components
from models.families.sd import SDFamily
from models.prompts import Encoded
from models.sampling import make_sampler


def micro_conditions(files: list[Path], sizes: list[Size]) -> torch.Tensor:
    """SDXL's size/crop ids (N, 6) of image files fitted to ``sizes`` (H, W): orig_h, orig_w, crop_top,
    crop_left, H, W (the crop ``models.data.fit_crop`` takes, in the resized image)."""
    rows = []
    for path, size in zip(files, sizes, strict=True):
        with Image.open(path) as img:
            width, height = img.size
        rows.append([height, width, *crop_geometry(width, height, size)[2:], *size])
    return torch.tensor(rows, dtype=torch.long).view(-1, 6)


def pipeline_index(location: str) -> dict[str, Any]:
    """The folder's ``model_index.json`` (empty when there is none to read)."""
    try:
        return dict(StableDiffusionXLPipeline.load_config(location))
    except (OSError, ValueError):
        return {}


def base_scheduler_class(index: dict[str, Any]) -> type:
    """The scheduler class the pipeline folder names (Euler when it names none diffusers knows)."""
    name = (index.get("scheduler") or [None, None])[1]
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    return cls if isinstance(cls, type) and issubclass(cls, SchedulerMixin) else EulerDiscreteScheduler


class SDXLFamily(SDFamily):
    """SDXL (base 1.0 layout) tuned on captioned images; full or LoRA."""

    name = "sdxl"
    pipeline_class = StableDiffusionXLPipeline

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, text_parts: dict[str, Any],
                 scheduler_config: dict, *, location: str = "", device: str = "cpu", resolution: int | None = None,
                 force_zeros: bool = True, scheduler_class: type = EulerDiscreteScheduler):
        self.unet = unet
        self.force_zeros, self.scheduler_class = bool(force_zeros), scheduler_class
        self.setup(unet, vae, text_parts, scheduler_config, location=location, device=device,
                   resolution=resolution)
        self.check_resolution()

    @classmethod
    def load_parts(cls, location: str, what: str = "Stable Diffusion XL", *, config: TrainConfig | None = None,
                   device: str = "cpu") -> dict[str, Any]:
        """The SDXL components of a diffusers folder (or hub id) as keyword arguments of ``__init__``."""
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        text = load_components(location, {"text_encoder": CLIPTextModel, "tokenizer": CLIPTokenizer,
                                          "text_encoder_2": CLIPTextModelWithProjection, "tokenizer_2": CLIPTokenizer},
                               what=what, dtype=frozen_dtype(device, config))
        nets = load_components(location, {"unet": UNet2DConditionModel, "vae": AutoencoderKL}, what=what,
                               dtype=torch.float32)
        index = pipeline_index(location)
        scheduler = load_components(location, {"scheduler": base_scheduler_class(index)}, what=what)["scheduler"]
        return dict(unet=nets["unet"], vae=nets["vae"], text_parts=text, scheduler_config=dict(scheduler.config),
                    scheduler_class=type(scheduler), force_zeros=index.get("force_zeros_for_empty_prompt", True),
                    resolution=config.resolution if config else None)

    @classmethod
    def from_pretrained(cls, location: str, *, config: TrainConfig | None = None, device: str = "cpu") -> SDXLFamily:
        return cls(**cls.load_parts(location, config=config, device=device), location=location, device=device)

    def resolutions(self) -> Resolutions:
        """Multiples of the UNet's downsampling × the VAE factor, with no upper bound (a convolutional UNet)."""
        native = int(self.unet.config.sample_size) * self.vae_factor
        return Resolutions(native=native, multiple=self.size_multiple())

    def inference_scheduler(self, sampler: str, steps: int):
        """DDIM/DDPM from the base's config; x₀ is not clipped (Euler never clips, latents are unbounded)."""
        return make_sampler(sampler, {"clip_sample": False, **self.scheduler_config}, steps)

    # --- text ---------------------------------------------------------------------------------------
    def text_pipeline(self) -> StableDiffusionXLPipeline:
        """A pipeline around the text parts, for diffusers' ``encode_prompt``."""
        return StableDiffusionXLPipeline(vae=None, unet=self.unet, scheduler=None, add_watermarker=False,
                                         force_zeros_for_empty_prompt=self.force_zeros, **self.text_parts)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Encoded:
        """``embeds`` (P, L, D1 + D2) and ``pooled`` (P, D2), as the pipeline computes them."""
        embeds, _, pooled, _ = self.text_pipeline().encode_prompt(prompts, device=self.text_device,
                                                                  do_classifier_free_guidance=False)
        return {"embeds": embeds.to(self.table_dtype).cpu(), "pooled": pooled.to(self.table_dtype).cpu()}

    def default_time_ids(self, n: int, size: Size | None = None) -> torch.Tensor:
        """(n, 6) ids of an uncropped image at ``size`` (H, W), else the trained square: what the pipeline
        samples with."""
        height, width = size or (self.image_size, self.image_size)
        return torch.tensor([height, width, 0, 0, height, width]).expand(n, 6)

    def conditions_for_prompts(self, ids: torch.Tensor, size: Size | None = None) -> torch.Tensor:
        """Prompt ids (N,) -> rows (N, 7) of uncropped images at ``size`` (else the trained square)."""
        return torch.cat([ids.view(-1, 1), self.default_time_ids(len(ids), size)], dim=1)

    def embeddings(self, cond: torch.Tensor) -> Encoded:
        """Conditions (N, 7), or plain prompt ids (N,) at the default sizes -> the encoded prompts (id 0 as
        zeros under ``force_zeros``) and ``time_ids`` (N, 6), on the model's device."""
        rows = cond if cond.dim() == 2 else self.conditions_for_prompts(cond)
        ids, time_ids = rows[:, 0], rows[:, 1:]
        emb = super().embeddings(ids)
        if self.force_zeros:
            null = (ids == 0).to(self.device)  # (N,)
            emb = {k: v.masked_fill(null.view(-1, *[1] * (v.dim() - 1)), 0) for k, v in emb.items()}
        return {**emb, "time_ids": time_ids.to(self.device, torch.float32)}

    def encode_on_device(self, prompts: list[str]) -> Encoded:
        return {**super().encode_on_device(prompts),
                "time_ids": self.default_time_ids(len(prompts)).to(self.device, torch.float32)}

    def unet_conditioning(self, emb: Encoded) -> dict[str, Any]:
        """Cross-attention on ``embeds``; pooled text and size/crop ids through ``added_cond_kwargs``."""
        return {"encoder_hidden_states": emb["embeds"],
                "added_cond_kwargs": {"text_embeds": emb["pooled"], "time_ids": emb["time_ids"]}}

    # --- conditions ----------------------------------------------------------------------------------
    def prepare_target(self, dataset, config: TrainConfig, bank, *, cache_dir, progress=None):
        """SD's target set, its prompt ids extended to rows (prompt id, 6 size/crop ids)."""
        latents = super().prepare_target(dataset, config, bank, cache_dir=cache_dir, progress=progress)
        square = (config.resolution, config.resolution)
        sizes = micro_conditions(dataset.files, dataset.sizes or [square] * len(dataset))  # (N, 6)
        latents.labels = torch.cat([latents.labels.view(-1, 1), sizes], dim=1)  # (N, 7)
        return latents

    def drop_conditions(self, cond: torch.Tensor, drop_prob: float, generator: torch.Generator) -> torch.Tensor:
        ids = super().drop_conditions(cond[:, 0], drop_prob, generator)
        return torch.cat([ids.view(-1, 1), cond[:, 1:]], dim=1)

    def generate_bank_batch(self, n: int, config: TrainConfig, generator: torch.Generator, *, size=None):
        """SD's bank batch; a bucket's images (``size``) are recorded as rows (prompt id, H, W, 0, 0, H, W)."""
        latents, ids = super().generate_bank_batch(n, config, generator, size=size)
        return latents, (self.conditions_for_prompts(ids, size) if size else ids)

    def bank_conditions(self, bank_cond: torch.Tensor) -> torch.Tensor:
        """Bank prompt ids (M,) -> rows (bank prompt id or 0, R, R, 0, 0, R, R), or rows (M, 7) of a bucket's
        bank -> the same with their sizes kept: bank images are sampled uncropped."""
        if bank_cond.dim() == 2 and bank_cond.shape[1] == 7:
            return torch.cat([super().bank_conditions(bank_cond[:, 0]).view(-1, 1), bank_cond[:, 1:]], dim=1)
        indices = bank_cond.view(len(bank_cond), -1)[:, 0]
        return self.conditions_for_prompts(super().bank_conditions(indices))  # (M, 7)

    # --- export ---------------------------------------------------------------------------------------
    def pipeline_parts(self) -> dict[str, Any]:
        return {**super().pipeline_parts(), "scheduler": self.scheduler_class.from_config(self.scheduler_config)}

    def pipeline_extras(self) -> dict[str, Any]:
        return {"force_zeros_for_empty_prompt": self.force_zeros, "add_watermarker": False}

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "force_zeros_for_empty_prompt": self.force_zeros,
                "scheduler": self.scheduler_class.__name__}

