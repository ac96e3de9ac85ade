"""Stable Diffusion text-to-image: UNet2DConditionModel + CLIP text encoder/tokenizer + AutoencoderKL.

Conditions are integer ids into one cached table of text embeddings (P, L, D): row 0 is the empty
prompt (the text-to-image null condition), then the target captions, then the bank prompts. A
target row's condition is its caption id; the CFG drop swaps it for 0.

Retention conditioning. With ``bank_label: null`` (default) bank rows are trained on the empty
prompt, the paper's null-label choice carried over: the bank keeps the base model's low-noise
denoising, while the prompts' meaning is left to the target captions. ``bank_label: prompt``
trains each bank image with the prompt it was sampled with, which also keeps the base's
prompt-conditional behaviour but ties retention to the bank's prompt distribution.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from torch import nn

from contract.families import Resolutions
from contract.train_config import TrainConfig
from models.difftune import drop_labels
from models.families.base import LatentFamily, fingerprint_module
from models.families.components import load_components
from models.lora import save_lora
from models.prompts import Encoded, PromptTable, cached_table
from models.sampling import guided

MAX_VALIDATION_PROMPTS = 4


class SDFamily(LatentFamily):
    """Stable Diffusion (1.x/2.x layout) tuned on captioned images."""

    name = "sd"
    pipeline_class = StableDiffusionPipeline

    noise_scheduler_class: Any = DDPMScheduler

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: nn.Module, tokenizer: Any,
                 scheduler_config: dict, *, location: str = "", device: str = "cpu"):
        self.unet = unet
        self.setup(unet, vae, {"text_encoder": text_encoder, "tokenizer": tokenizer}, scheduler_config,
                   location=location, device=device)

    def setup(self, denoiser: nn.Module, vae: AutoencoderKL, text_parts: dict[str, Any], scheduler_config: dict, *,
              location: str, device: str, resolution: int | None = None) -> None:
        """Place the parts: the denoiser trains; the VAE and text encoders (``text_parts``, named as in
        the pipeline, tokenizers included) are frozen."""
        self.device = torch.device(device)
        self.location, self.resolution = location, resolution
        self.denoiser = denoiser.to(self.device)
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.text_device = self.device  # where prompts are encoded (see offload_text_encoders)
        self.text_parts = {k: v.to(self.device).eval().requires_grad_(False) if isinstance(v, nn.Module) else v
                           for k, v in text_parts.items()}
        self.scheduler_config = dict(scheduler_config)
        self.noise_scheduler = self.noise_scheduler_class.from_config(self.scheduler_config)
        self.base_fingerprint = fingerprint_module(denoiser)
        self.reset_prompts()

    @property
    def text_encoder(self) -> nn.Module:
        return self.text_parts["text_encoder"]

    @property
    def tokenizer(self) -> Any:
        return self.text_parts["tokenizer"]

    def reset_prompts(self) -> None:
        """No captions yet: the prompt table holds only the empty prompt."""
        self.bank_prompts: list[str] = [""]
        self.captions: list[str] = []
        self.text_table = PromptTable(self.encode_prompts([""]))
        self.bank_offset = 0
        self.bank_label = "null"

    @property
    def base_denoiser(self) -> nn.Module:
        """The text-conditioned network that generates images (the bank samples from it)."""
        return getattr(self, self.denoiser_part)

    @classmethod
    def load_parts(cls, location: str, what: str = "Stable Diffusion") -> dict[str, Any]:
        """The SD components of a diffusers folder (or hub id) as keyword arguments."""
        from transformers import CLIPTextModel, CLIPTokenizer

        parts = load_components(location, {"unet": UNet2DConditionModel, "vae": AutoencoderKL,
                                            "text_encoder": CLIPTextModel, "tokenizer": CLIPTokenizer,
                                            "scheduler": DDPMScheduler}, what=what)
        parts["scheduler_config"] = dict(parts.pop("scheduler").config)
        return parts

    @classmethod
    def from_pretrained(cls, location: str, *, config: TrainConfig | None = None, device: str = "cpu") -> SDFamily:
        return cls(**cls.load_parts(location), location=location, device=device)

    # --- text ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Encoded:
        """CLIP last hidden states of ``prompts``: ``embeds`` (P, L, D) on the CPU."""
        ids = self.tokenizer(prompts, padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids
        return {"embeds": self.text_encoder(ids.to(self.text_device))[0].to(self.table_dtype).cpu()}

    @property
    def table_dtype(self) -> torch.dtype:
        """Stored embeddings: bf16 on a GPU (what autocast computes in), fp32 on the CPU."""
        return torch.bfloat16 if self.device.type == "cuda" else torch.float32

    def text_encoders(self) -> list[nn.Module]:
        """The frozen encoders whose weights decide the prompt table (its cache key)."""
        return [v for v in self.text_parts.values() if isinstance(v, nn.Module)]

    def offload_text_encoders(self) -> None:
        """Keep the text encoders in host memory (``text_encoder_device: cpu``): training reads the cached
        embeddings, so only the bank and the sample grids encode prompts, on the CPU."""
        self.text_device = torch.device("cpu")
        for encoder in self.text_encoders():
            encoder.to(self.text_device)

    def prompt_table(self, prompts: list[str], cache_dir: Path | None) -> PromptTable:
        """``encode_prompts`` of every prompt once, cached on disk under ``cache_dir`` when given."""
        identity = "|".join(fingerprint_module(m) for m in self.text_encoders())
        return cached_table(self.encode_prompts, prompts, identity, cache_dir)

    def conditions_for_prompts(self, ids: torch.Tensor) -> torch.Tensor:
        """Training conditions of prompt ids (N,) with nothing else recorded: here the ids themselves."""
        return ids

    def embeddings(self, ids: torch.Tensor) -> Encoded:
        """Prompt ids (N,) -> their encoded tensors on the model's device."""
        return self.text_table.rows(ids, self.device)

    # --- run hooks -----------------------------------------------------------------------------------
    def attach_dataset(self, dataset, config: TrainConfig) -> None:
        self.bank_prompts = list(config.bank_prompts or sorted(set(dataset.captions)) or [""])

    def bank_key_fields(self) -> dict[str, Any]:
        digest = hashlib.sha256("\0".join(self.bank_prompts).encode()).hexdigest()[:16]
        fields: dict[str, Any] = {"prompts": digest, "num_prompts": len(self.bank_prompts)}
        if self.resolution is not None:  # a family that trains at any size samples its bank at that size
            fields["resolution"] = self.image_size
        return fields

    def prepare_target(self, dataset, config: TrainConfig, bank, *, cache_dir, progress=None):
        """Build the prompt table ["", captions..., bank prompts...], then encode (and cache) images."""
        from models.latents import encode_image_folder

        self.captions = list(dataset.captions)
        self.bank_offset = 1 + len(self.captions)
        self.bank_label = config.bank_label
        self.text_table = self.prompt_table(["", *self.captions, *self.bank_prompts], cache_dir)
        return encode_image_folder(self, dataset, resolution=config.resolution, flip=self.uses_flip(config),
                                   cache_dir=cache_dir, progress=progress)

    def uses_flip(self, config: TrainConfig) -> bool:
        return config.random_flip

    @property
    def sized_module(self) -> nn.Module:
        return self.base_denoiser

    def size_multiple(self) -> int:
        """Pixel sides a UNet trains at: multiples of its downsampling × the VAE factor."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1) * self.vae_factor

    def bucket_resolutions(self) -> Resolutions | None:
        """Multiples of the model's step: a UNet (SD-1.x/2.x) is convolutional, so buckets need no more
        even where the configured square is its native size only."""
        return super().bucket_resolutions() or Resolutions(self.resolutions().native, multiple=self.size_multiple())

    # --- conditioning ---------------------------------------------------------------------------------
    def drop_conditions(self, cond: torch.Tensor, drop_prob: float, generator: torch.Generator) -> torch.Tensor:
        return drop_labels(cond, 0, drop_prob, generator)

    def bank_conditions(self, bank_cond: torch.Tensor) -> torch.Tensor:
        return bank_cond + self.bank_offset if self.bank_label == "prompt" else torch.zeros_like(bank_cond)

    def concat_conditions(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b])

    def index_conditions(self, cond: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return cond[index]

    # --- denoising ----------------------------------------------------------------------------------
    def predict(self, model: nn.Module, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.text_call(model)(noisy, t, self.embeddings(cond))  # (N, C, h, w)

    def text_call(self, model: nn.Module):
        """(x_t, t, encoded prompts) -> the prediction of the denoiser ``model``."""
        return lambda x, t, emb: model(x, t, **self.unet_conditioning(emb)).sample

    def unet_conditioning(self, emb: Encoded) -> dict[str, Any]:
        """Keyword arguments that condition a UNet (or a ControlNet) on encoded prompts."""
        return {"encoder_hidden_states": emb["embeds"]}

    def guided_fn(self, call, text: Encoded, guidance: float, base_call=None):
        """CFG over encoded prompts against the empty prompt (row 0); ``call`` as from ``text_call``. With
        ``base_call`` (the base model's), Domain Guidance: the empty prompt's branch comes from the base."""
        rows = len(next(iter(text.values())))
        empty = self.embeddings(torch.zeros(rows, dtype=torch.long))
        uncond = base_call or call
        return guided(lambda x, t: call(x, t, text), lambda x, t: uncond(x, t, empty), guidance)

    def encode_on_device(self, prompts: list[str]) -> Encoded:
        return {k: v.to(self.device) for k, v in self.encode_prompts(prompts).items()}

    # --- knowledge bank and samples -----------------------------------------------------------------
    def generate_bank_batch(self, n: int, config: TrainConfig, generator: torch.Generator, *, size=None):
        """n base-model images (of ``size`` (H, W), else the trained square) for prompts drawn from
        ``bank_prompts``; conditions are prompt ids."""
        ids = torch.randint(0, len(self.bank_prompts), (n,), generator=generator)  # (n,)
        text = self.encode_on_device([self.bank_prompts[i] for i in ids.tolist()])
        bank = config.bank
        fn = self.guided_fn(self.text_call(self.base_denoiser.eval()), text, bank.guidance_scale)
        latents = self.sample_chain(fn, n, steps=bank.num_inference_steps, sampler=bank.sampler,
                                    generator=generator, size=size)
        return latents.cpu(), ids

    def validation_prompts(self, config: TrainConfig) -> list[str]:
        return list(config.validation_prompts or self.captions[:MAX_VALIDATION_PROMPTS] or [""])

    def model_call(self, model: nn.Module, controls: torch.Tensor | None = None):
        """(x_t, t, text embeddings) -> ε for sampling with ``model`` (controls: ControlNet only)."""
        return self.text_call(model)

    @torch.no_grad()
    def generate_images(self, model: nn.Module, prompts: list[str], *, guidance: float, steps: int,
                        generator: torch.Generator, controls: torch.Tensor | None = None,
                        base=None) -> torch.Tensor:
        """Images in [0, 1] (n, 3, H, W) for ``prompts``: DDIM with CFG against the empty prompt, or with
        ``base`` (the pre-trained denoiser), Domain Guidance."""
        was_training = model.training
        text = self.encode_on_device(prompts)
        base_call = self.text_call(base) if base is not None else None
        fn = self.guided_fn(self.model_call(model.eval(), controls), text, guidance, base_call)
        latents = self.sample_chain(fn, len(prompts), steps=steps, sampler="ddim", generator=generator)
        model.train(was_training)
        return self.decode_latents(latents)

    def sample_grid(self, model: nn.Module, config: TrainConfig, generator: torch.Generator, *,
                    base=None) -> torch.Tensor:
        return self.generate_images(model, self.validation_prompts(config), guidance=config.validation_guidance_scale,
                                    steps=config.sample_steps, generator=generator, base=base)

    # --- export ---------------------------------------------------------------------------------------
    denoiser_part = "unet"  # the denoiser's name in the pipeline (and its LoRA prefix)

    def pipeline_parts(self) -> dict[str, Any]:
        """Every pipeline component but the tuned denoiser."""
        return dict(vae=self.vae, **self.text_parts, scheduler=self.noise_scheduler_class.from_config(self.scheduler_config),
                    **self.pipeline_extras())

    def pipeline_extras(self) -> dict[str, Any]:
        return dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    def save_pretrained(self, model: nn.Module, path: Path) -> None:
        pipe = self.pipeline_class(**{**self.pipeline_parts(), self.denoiser_part: self.export_denoiser(model)})
        pipe.save_pretrained(path, safe_serialization=True)
        save_lora(model, path, self.denoiser_part, self.pipeline_class)

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "base_model": self.location, "num_captions": len(self.captions),
                "num_bank_prompts": len(self.bank_prompts), "bank_label": self.bank_label}
