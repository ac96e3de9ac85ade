"""Stable Diffusion 3 / 3.5: an MMDiT (``SD3Transformer2DModel``) trained by flow matching.

Text: CLIP-L and CLIP-G (pooled projections) and T5, encoded by diffusers' own
``StableDiffusion3Pipeline.encode_prompt`` (so training sees exactly what inference does); T5 is
optional as in diffusers (without ``text_encoder_3/`` its part of the embedding is zeros). Prompts,
the CFG drop and the bank's conditions work as for SD (``models/families/sd.py``): conditions are ids
into one cached prompt table (``embeds`` (P, L, D), ``pooled`` (P, D)), row 0 the empty prompt.

Noise: σ from SD3's native density, logit-normal(0, 1) shifted by the scheduler's ``shift`` (3.0),
reweighted per stream for Diff-Tuning (``models/noise.py``); the transformer gets σ·1000.
Any multiple of 16 px up to the positional table's reach trains (``pos_embed_max_size`` × 16 px: 3072 px for
SD3-medium and SD3.5-large, 6144 px for SD3.5-medium, which was itself trained up to 1440 px).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel, StableDiffusion3Pipeline
from torch import nn

from contract.families import Resolutions
from contract.train_config import TrainConfig
from models.families.components import frozen_dtype, load_components
from models.families.flow import FlowMatching
from models.families.sd import SDFamily
from models.prompts import Encoded

DEFAULT_MAX_SEQUENCE_LENGTH = 256  # T5 tokens, StableDiffusion3Pipeline's default


class SD3Family(FlowMatching, SDFamily):
    """SD3 / SD3.5 (medium, large) tuned on captioned images; full or LoRA."""

    name = "sd3"
    pipeline_class = StableDiffusion3Pipeline
    denoiser_part = "transformer"
    text_classes = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")

    def __init__(self, transformer: SD3Transformer2DModel, vae: AutoencoderKL, text_parts: dict[str, Any],
                 scheduler_config: dict, *, location: str = "", device: str = "cpu", resolution: int | None = None,
                 max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH):
        self.transformer = transformer
        self.max_sequence_length = max_sequence_length
        self.setup(transformer, vae, text_parts, scheduler_config, location=location, device=device,
                   resolution=resolution)
        self.check_resolution()

    @classmethod
    def component_classes(cls) -> dict[str, Any]:
        from diffusers import FlowMatchEulerDiscreteScheduler
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

        return {"text_encoder": CLIPTextModelWithProjection, "tokenizer": CLIPTokenizer,
                "text_encoder_2": CLIPTextModelWithProjection, "tokenizer_2": CLIPTokenizer,
                "text_encoder_3": T5EncoderModel, "tokenizer_3": T5TokenizerFast,
                "scheduler": FlowMatchEulerDiscreteScheduler}

    @classmethod
    def from_pretrained(cls, location: str, *, config: TrainConfig | None = None, device: str = "cpu") -> SD3Family:
        what = "Stable Diffusion 3"
        text = load_components(location, cls.component_classes(), what=what,
                               optional=("text_encoder_3", "tokenizer_3"), dtype=frozen_dtype(device, config))
        nets = load_components(location, {"transformer": SD3Transformer2DModel, "vae": AutoencoderKL}, what=what)
        scheduler = text.pop("scheduler")
        return cls(nets["transformer"], nets["vae"], text, dict(scheduler.config), location=location, device=device,
                   resolution=config.resolution if config else None,
                   max_sequence_length=(config.max_sequence_length if config else None) or DEFAULT_MAX_SEQUENCE_LENGTH)

    def resolutions(self) -> Resolutions:
        """Multiples of a patch in pixels, up to the positional embedding's reach (``pos_embed_max_size``)."""
        cfg = self.transformer.config
        step = cfg.patch_size * self.vae_factor
        largest = cfg.pos_embed_max_size * step if cfg.pos_embed_max_size else None
        return Resolutions(native=cfg.sample_size * self.vae_factor, multiple=step, largest=largest)

    # --- text ---------------------------------------------------------------------------------------
    def text_pipeline(self) -> StableDiffusion3Pipeline:
        """A pipeline around the text parts, for diffusers' ``encode_prompt`` (the transformer's config sizes
        the T5 part when there is no T5)."""
        return self.pipeline_class(transformer=self.transformer, scheduler=None, vae=None, **self.text_parts)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Encoded:
        """``embeds`` (P, 77 + T5 tokens, D) and ``pooled`` (P, D'), as the pipeline computes them."""
        embeds, _, pooled, _ = self.text_pipeline().encode_prompt(
            prompts, prompt_2=None, prompt_3=None, device=self.text_device, do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length)
        return {"embeds": embeds.to(self.table_dtype).cpu(), "pooled": pooled.to(self.table_dtype).cpu()}

    def text_call(self, model: nn.Module):
        """(x_σ, σ·1000, encoded prompts) -> the velocity predicted by ``model``."""
        def call(x, t, emb):
            return model(hidden_states=x, timestep=t, encoder_hidden_states=emb["embeds"].to(x.dtype),
                         pooled_projections=emb["pooled"].to(x.dtype)).sample
        return call

    def bank_key_fields(self) -> dict[str, Any]:
        return {**super().bank_key_fields(), "max_sequence_length": self.max_sequence_length}

    # --- export ---------------------------------------------------------------------------------------
    def pipeline_extras(self) -> dict[str, Any]:
        return {}

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "max_sequence_length": self.max_sequence_length,
                "t5": self.text_parts.get("text_encoder_3") is not None}
