"""Flux.1 (dev, schnell): an MMDiT (``FluxTransformer2DModel``) on 2×2-packed latents, trained by flow matching.

Text: CLIP (pooled projections only) and T5 (the token sequence), encoded by diffusers' own
``FluxPipeline.encode_prompt``. Prompts, the CFG label drop and the bank's conditions work as for SD
(``models/families/sd.py``): conditions are ids into one cached prompt table (``embeds`` (P, L, D),
``pooled`` (P, D')), row 0 the empty prompt. Text position ids are zeros and rebuilt per call.

Latents: stored and noised unpacked (N, C, h, w) like every latent family; ``text_call`` packs them
into 2×2 patches (N, h/2·w/2, 4C) for the transformer and unpacks its velocity, so any resolution that
is a multiple of 2 × the VAE factor trains (the rotary positions have no fixed reach).

Guidance: Flux.1-dev is guidance-distilled: the transformer embeds a guidance value
(``distilled_guidance``, 3.5) in training, the bank and samples, and sampling runs no classifier-free
guidance (one transformer call per step; the configured CFG scales are unused).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from torch import nn

from contract.families import Resolutions
from contract.train_config import TrainConfig
from models.families.components import frozen_dtype, load_components
from models.families.flow import FlowMatching
from models.families.sd import SDFamily
from models.flow_matching import SigmaDensity
from models.prompts import Encoded

DEFAULT_MAX_SEQUENCE_LENGTH = 512  # T5 tokens, FluxPipeline's default
DEFAULT_DISTILLED_GUIDANCE = 3.5  # FluxPipeline's default guidance_scale
DEFAULT_SAMPLE_SIZE = 128  # FluxPipeline.default_sample_size: latent pixels of the native 1024 px
PATCH = 2  # latents are packed into PATCH × PATCH patches


class FluxFamily(FlowMatching, SDFamily):
    """Flux.1 dev / schnell tuned on captioned images; full or LoRA."""

    name = "flux"
    pipeline_class = FluxPipeline
    denoiser_part = "transformer"

    def __init__(self, transformer: FluxTransformer2DModel, vae: AutoencoderKL, text_parts: dict[str, Any],
                 scheduler_config: dict, *, location: str = "", device: str = "cpu", resolution: int | None = None,
                 max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
                 distilled_guidance: float = DEFAULT_DISTILLED_GUIDANCE):
        self.transformer = transformer
        self.max_sequence_length = max_sequence_length
        self.distilled_guidance = float(distilled_guidance)
        self.setup(transformer, vae, text_parts, scheduler_config, location=location, device=device,
                   resolution=resolution)
        self.check_resolution()

    @classmethod
    def from_pretrained(cls, location: str, *, config: TrainConfig | None = None, device: str = "cpu") -> FluxFamily:
        from diffusers import FlowMatchEulerDiscreteScheduler
        from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

        text = load_components(location, {"text_encoder": CLIPTextModel, "tokenizer": CLIPTokenizer,
                                          "text_encoder_2": T5EncoderModel, "tokenizer_2": T5TokenizerFast,
                                          "scheduler": FlowMatchEulerDiscreteScheduler},
                               what="Flux", dtype=frozen_dtype(device, config))
        nets = load_components(location, {"transformer": FluxTransformer2DModel, "vae": AutoencoderKL}, what="Flux")
        scheduler_config = dict(text.pop("scheduler").config)
        options: dict[str, Any] = {}
        if config is not None:
            options = dict(resolution=config.resolution, distilled_guidance=config.distilled_guidance,
                           max_sequence_length=config.max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH)
        return cls(nets["transformer"], nets["vae"], text, scheduler_config, location=location, device=device,
                   **options)

    def resolutions(self) -> Resolutions:
        """Multiples of a packed patch in pixels (2 × the VAE factor), with no upper bound (rotary positions)."""
        return Resolutions(native=DEFAULT_SAMPLE_SIZE * self.vae_factor, multiple=PATCH * self.vae_factor)

    # --- noise ----------------------------------------------------------------------------------------
    def shift_mu(self) -> float:
        """diffusers' ``calculate_shift`` for the packed sequence length (h/2)·(w/2) of the trained resolution."""
        _, h, w = self.latent_shape
        cfg = self.scheduler_config
        return float(calculate_shift((h // PATCH) * (w // PATCH), cfg.get("base_image_seq_len", 256),
                                     cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5),
                                     cfg.get("max_shift", 1.15)))

    def native_shift(self) -> float:
        """The σ shift of the scheduler: e^mu with dynamic (resolution-dependent) shifting, else its static one."""
        cfg = self.scheduler_config
        if not cfg.get("use_dynamic_shifting"):
            return float(cfg.get("shift", 1.0))
        mu = self.shift_mu()
        return math.exp(mu) if cfg.get("time_shift_type", "exponential") == "exponential" else mu

    def native_density(self) -> SigmaDensity:
        """Flux's training σ density: logit-normal(0, 1) with the scheduler's resolution-dependent shift
        (``native_shift``). Diff-Tuning's target and bank streams reweight this density by σ^s and (1 − σ)^s'."""
        return SigmaDensity("logit_normal", shift=self.native_shift())

    def timestep_options(self, steps: int) -> dict:
        """As ``FluxPipeline.__call__``: σ from 1 to 1/steps and ``mu`` (used with dynamic shifting)."""
        options: dict[str, Any] = {"mu": self.shift_mu()}
        if not self.scheduler_config.get("use_flow_sigmas"):
            options["sigmas"] = np.linspace(1.0, 1 / steps, steps)
        return options

    # --- text ---------------------------------------------------------------------------------------
    def text_pipeline(self) -> FluxPipeline:
        """A pipeline around the text parts only, for diffusers' ``encode_prompt``."""
        return FluxPipeline(transformer=None, scheduler=None, vae=None, **self.text_parts)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Encoded:
        """``embeds`` (P, T5 tokens, D) and ``pooled`` (P, D'), as the pipeline computes them."""
        embeds, pooled, _ = self.text_pipeline().encode_prompt(
            prompt=prompts, prompt_2=None, device=self.text_device, max_sequence_length=self.max_sequence_length)
        return {"embeds": embeds.to(self.table_dtype).cpu(), "pooled": pooled.to(self.table_dtype).cpu()}

    # --- denoising ----------------------------------------------------------------------------------
    def guidance(self, n: int, device: torch.device) -> torch.Tensor | None:
        """The embedded guidance (n,) for a guidance-distilled transformer, else None."""
        if not self.transformer.config.guidance_embeds:
            return None
        return torch.full((n,), self.distilled_guidance, device=device, dtype=torch.float32)

    def text_call(self, model: nn.Module):
        """(x_σ (N, C, h, w), σ·1000 (N,), encoded prompts) -> the velocity (N, C, h, w) predicted by ``model``."""
        def call(x, t, emb):
            n, c, h, w = x.shape
            packed = FluxPipeline._pack_latents(x, n, c, h, w)  # (N, h/2·w/2, 4C)
            # (h/2·w/2, 3): each patch's (0, row, column)
            img_ids = FluxPipeline._prepare_latent_image_ids(n, h // PATCH, w // PATCH, x.device, x.dtype)
            embeds = emb["embeds"].to(x.dtype)  # (N, L, D)
            txt_ids = torch.zeros(embeds.shape[1], 3, device=x.device, dtype=x.dtype)  # (L, 3)
            out = model(hidden_states=packed, timestep=t / 1000, guidance=self.guidance(n, x.device),
                        pooled_projections=emb["pooled"].to(x.dtype), encoder_hidden_states=embeds,
                        txt_ids=txt_ids, img_ids=img_ids).sample  # (N, h/2·w/2, 4C)
            return FluxPipeline._unpack_latents(out, h, w, 1)  # sizes in latent pixels: (N, C, h, w)
        return call

    def guided_fn(self, call, text: Encoded, guidance: float, base_call=None):
        """Guidance-distilled: the conditional branch only, with the embedded guidance; ``guidance`` (the
        configured CFG scale) is unused."""
        return lambda x, t: call(x, t, text)

    def bank_key_fields(self) -> dict[str, Any]:
        return {**super().bank_key_fields(), "max_sequence_length": self.max_sequence_length,
                "distilled_guidance": self.distilled_guidance}

    # --- export ---------------------------------------------------------------------------------------
    def pipeline_extras(self) -> dict[str, Any]:
        return {}  # no safety checker; image_encoder and feature_extractor default to None

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "max_sequence_length": self.max_sequence_length,
                "distilled_guidance": self.distilled_guidance, "native_shift": self.native_shift()}
