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
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn

from contract.train_config import ConfigError, TrainConfig
from models.difftune import drop_labels
from models.families.base import LatentFamily, fingerprint_module
from models.lora import save_lora
from models.sampling import guided

MAX_VALIDATION_PROMPTS = 4


def check_folder(location: str, needed: tuple[str, ...], what: str) -> bool:
    """True for a local folder (checked to hold ``needed`` sub-folders), False for a hub id."""
    if not location:
        raise ConfigError("base_model: no base model location given")
    path = Path(location)
    looks_local = path.is_absolute() or location.startswith(".") or path.exists()
    missing = [n for n in needed if not (path / n).is_dir()]
    if looks_local and missing:
        raise ConfigError(f"base_model: {location!r} is not a diffusers {what} folder (no {missing[0]}/ inside)")
    return looks_local


class SDFamily(LatentFamily):
    """Stable Diffusion (1.x/2.x layout) tuned on captioned images."""

    name = "sd"
    pipeline_class = StableDiffusionPipeline

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: nn.Module, tokenizer: Any,
                 scheduler_config: dict, *, location: str = "", device: str = "cpu"):
        self.device = torch.device(device)
        self.location = location
        self.unet = unet.to(self.device)
        self.denoiser = self.unet
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.text_encoder = text_encoder.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.noise_scheduler = DDPMScheduler.from_config(self.scheduler_config)
        self.base_fingerprint = fingerprint_module(unet)
        self.bank_prompts: list[str] = [""]
        self.captions: list[str] = []
        self.text_table = self.encode_prompts([""])  # (P, L, D)
        self.bank_offset = 0
        self.bank_label = "null"

    @classmethod
    def load_parts(cls, location: str, what: str = "Stable Diffusion") -> dict[str, Any]:
        """The SD components of a diffusers folder (or hub id) as keyword arguments."""
        from transformers import CLIPTextModel, CLIPTokenizer

        check_folder(location, ("unet", "vae", "text_encoder", "tokenizer"), what)
        try:
            return dict(unet=UNet2DConditionModel.from_pretrained(location, subfolder="unet"),
                        vae=AutoencoderKL.from_pretrained(location, subfolder="vae"),
                        text_encoder=CLIPTextModel.from_pretrained(location, subfolder="text_encoder"),
                        tokenizer=CLIPTokenizer.from_pretrained(location, subfolder="tokenizer"),
                        scheduler_config=dict(DDPMScheduler.from_pretrained(location, subfolder="scheduler").config))
        except (OSError, ValueError) as err:
            raise ConfigError(f"base_model: cannot load a {what} pipeline from {location!r}: {err}") from err

    @classmethod
    def from_pretrained(cls, location: str, *, config: TrainConfig | None = None, device: str = "cpu") -> SDFamily:
        return cls(**cls.load_parts(location), location=location, device=device)

    # --- text ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], batch_size: int = 64) -> torch.Tensor:
        """CLIP last hidden states of ``prompts``, (P, L, D) fp32 on the CPU."""
        out = []
        for start in range(0, len(prompts), batch_size):
            ids = self.tokenizer(prompts[start : start + batch_size], padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids
            out.append(self.text_encoder(ids.to(self.device))[0].float().cpu())  # (n, L, D)
        return torch.cat(out)

    def cached_prompt_table(self, prompts: list[str], cache_dir: Path | None) -> torch.Tensor:
        """``encode_prompts`` through an on-disk cache keyed by text encoder and prompts."""
        h = hashlib.sha256(fingerprint_module(self.text_encoder).encode())
        for p in prompts:
            h.update(p.encode() + b"\0")
        path = Path(cache_dir) / "text" / f"{h.hexdigest()[:32]}.safetensors" if cache_dir else None
        if path is not None and path.exists():
            return load_file(path)["table"]
        table = self.encode_prompts(prompts)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            save_file({"table": table.contiguous()}, str(tmp))
            os.replace(tmp, path)
        return table

    def embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """Prompt ids (N,) -> text embeddings (N, L, D) on the model's device."""
        return self.text_table[ids.cpu()].to(self.device, non_blocking=True)

    # --- run hooks -----------------------------------------------------------------------------------
    def attach_dataset(self, dataset, config: TrainConfig) -> None:
        self.bank_prompts = list(config.bank_prompts or sorted(set(dataset.captions)) or [""])

    def bank_key_fields(self) -> dict[str, Any]:
        digest = hashlib.sha256("\0".join(self.bank_prompts).encode()).hexdigest()[:16]
        return {"prompts": digest, "num_prompts": len(self.bank_prompts)}

    def prepare_target(self, dataset, config: TrainConfig, bank, *, cache_dir, progress=None):
        """Build the prompt table ["", captions..., bank prompts...], then encode (and cache) images."""
        from models.latents import encode_image_folder

        self.captions = list(dataset.captions)
        self.bank_offset = 1 + len(self.captions)
        self.bank_label = config.bank_label
        self.text_table = self.cached_prompt_table(["", *self.captions, *self.bank_prompts], cache_dir)
        return encode_image_folder(self, dataset, resolution=config.resolution, flip=self.uses_flip(config),
                                   cache_dir=cache_dir, progress=progress)

    def uses_flip(self, config: TrainConfig) -> bool:
        return config.random_flip

    @property
    def sized_module(self) -> nn.Module:
        return self.unet

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
        """(x_t, t, text embeddings) -> ε of the denoiser ``model``."""
        return lambda x, t, emb: model(x, t, encoder_hidden_states=emb).sample

    def guided_fn(self, call, text: torch.Tensor, guidance: float):
        """CFG over text embeddings (N, L, D) against the empty prompt; ``call`` as from ``text_call``."""
        empty = self.text_table[:1].to(self.device).expand_as(text)  # (N, L, D)
        return guided(lambda x, t: call(x, t, text), lambda x, t: call(x, t, empty), guidance)

    # --- knowledge bank and samples -----------------------------------------------------------------
    def generate_bank_batch(self, n: int, config: TrainConfig, generator: torch.Generator):
        """n base-model images for prompts drawn from ``bank_prompts``; conditions are prompt ids."""
        ids = torch.randint(0, len(self.bank_prompts), (n,), generator=generator)  # (n,)
        text = self.encode_prompts([self.bank_prompts[i] for i in ids.tolist()]).to(self.device)
        bank = config.bank
        fn = self.guided_fn(self.text_call(self.unet.eval()), text, bank.guidance_scale)
        latents = self.sample_chain(fn, n, steps=bank.num_inference_steps, sampler=bank.sampler,
                                      generator=generator)
        return latents.cpu(), ids

    def validation_prompts(self, config: TrainConfig) -> list[str]:
        return list(config.validation_prompts or self.captions[:MAX_VALIDATION_PROMPTS] or [""])

    def model_call(self, model: nn.Module, controls: torch.Tensor | None = None):
        """(x_t, t, text embeddings) -> ε for sampling with ``model`` (controls: ControlNet only)."""
        return self.text_call(model)

    @torch.no_grad()
    def generate_images(self, model: nn.Module, prompts: list[str], *, guidance: float, steps: int,
                        generator: torch.Generator, controls: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] (n, 3, H, W) for ``prompts``: DDIM with CFG against the empty prompt."""
        was_training = model.training
        text = self.encode_prompts(prompts).to(self.device)
        fn = self.guided_fn(self.model_call(model.eval(), controls), text, guidance)
        latents = self.sample_chain(fn, len(prompts), steps=steps, sampler="ddim", generator=generator)
        model.train(was_training)
        return self.decode_latents(latents)

    def sample_grid(self, model: nn.Module, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
        return self.generate_images(model, self.validation_prompts(config), guidance=config.validation_guidance_scale,
                                    steps=config.sample_steps, generator=generator)

    # --- export ---------------------------------------------------------------------------------------
    def pipeline_parts(self) -> dict[str, Any]:
        return dict(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                    scheduler=DDPMScheduler.from_config(self.scheduler_config), safety_checker=None,
                    feature_extractor=None, requires_safety_checker=False)

    def save_pretrained(self, model: nn.Module, path: Path) -> None:
        pipe = self.pipeline_class(**{**self.pipeline_parts(), "unet": self.export_denoiser(model)})
        pipe.save_pretrained(path, safe_serialization=True)
        save_lora(model, path, "unet", self.pipeline_class)

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "base_model": self.location, "num_captions": len(self.captions),
                "num_bank_prompts": len(self.bank_prompts), "bank_label": self.bank_label}
