"""Random-weight SDXL, SD3.5 and Flux.1 families for the throughput benchmark (no downloads).

The denoiser has the published architecture (``SDXL``: the 2.6B UNet; ``SD3.5-medium``: the 2.5B
MMDiT; ``Flux.1-dev``: the 12B MMDiT), built directly on the device; ``*-tiny`` are the test-sized
models. A step never runs the text encoders or the VAE (prompt tables and latents are cached, as in
training), so the family is loaded from its tiny offline pipeline for those parts, and the prompt
table is replaced by random embeddings of the real shapes (tokens × width), the VAE by one with the
real latent channels and 8× downsampling.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from torch import nn

from contract.train_config import parse_config
from models.bank import KnowledgeBank
from models.families import family_class
from models.latents import LatentSet
from models.prompts import PromptTable


@dataclass(frozen=True)
class ModernModel:
    """A benchmark model: its family, the real text shapes and how to build the denoiser."""

    family: str
    text_tokens: int  # L of the prompt table's embeds
    text_width: int  # D of embeds
    pooled_width: int
    latent_channels: int
    build: Callable[[int], nn.Module] | None  # resolution -> denoiser; None: the tiny pipeline's own


def sdxl_unet(resolution: int) -> nn.Module:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=resolution // 8, block_out_channels=(320, 640, 1280), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        use_linear_projection=True)


def sd35_medium_transformer(resolution: int) -> nn.Module:
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=resolution // 8, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
        attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
        pooled_projection_dim=2048, pos_embed_max_size=384, dual_attention_layers=tuple(range(13)),
        qk_norm="rms_norm")


def flux_dev_transformer(resolution: int) -> nn.Module:
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=(16, 56, 56))


MODERN_MODELS: dict[str, ModernModel] = {
    "SDXL": ModernModel("sdxl", 77, 2048, 1280, 4, sdxl_unet),
    "SD3.5-medium": ModernModel("sd3", 77 + 256, 4096, 2048, 16, sd35_medium_transformer),
    "Flux.1-dev": ModernModel("flux", 512, 4096, 768, 16, flux_dev_transformer),
    "SDXL-tiny": ModernModel("sdxl", 0, 0, 0, 0, None),
    "SD3-tiny": ModernModel("sd3", 0, 0, 0, 0, None),
    "Flux-tiny": ModernModel("flux", 0, 0, 0, 0, None),
}


def real_size_vae(latent_channels: int) -> AutoencoderKL:
    """A light AutoencoderKL with 8× downsampling and the real latent channels (never run in a step)."""
    return AutoencoderKL(block_out_channels=(8, 8, 8, 8), latent_channels=latent_channels, norm_num_groups=8,
                         layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4)


def load_tiny_family(name: str, folder: Path, device: str):
    from models import tiny

    path = getattr(tiny, f"build_tiny_{name}_pipeline")(folder / name, resolution=16)
    config = parse_config({"family": name, "base_model": str(path), "resolution": 16, "max_sequence_length": 16})
    return family_class(name).from_pretrained(str(path), config=config, device=device)


def synthetic_modern_family(model: str, resolution: int, device: str, n: int = 64):
    """(family, target latents, bank) with random weights, prompt embeddings and latents."""
    if model not in MODERN_MODELS:
        raise ValueError(f"model: unknown model {model!r}; choose from {', '.join(MODERN_MODELS)}")
    spec = MODERN_MODELS[model]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        family = load_tiny_family(spec.family, Path(tmp), device)
    prompts = 16
    if spec.build is not None:
        with torch.device(device):  # initialised where it trains: a 12B model's CPU init takes minutes
            net = spec.build(resolution)
        setattr(family, family.denoiser_part, net)
        family.denoiser = net
        family.vae = real_size_vae(spec.latent_channels).to(device)
        family.resolution = resolution
        family.text_table = PromptTable({"embeds": torch.randn(prompts, spec.text_tokens, spec.text_width),
                                         "pooled": torch.randn(prompts, spec.pooled_width)})
    else:
        family.resolution = resolution
        family.text_table = family.prompt_table([f"prompt {i}" for i in range(prompts)], None)
    family.check_resolution()
    family.bank_offset = 1
    shape = family.latent_shape
    conditions = family.conditions_for_prompts
    latents = LatentSet(mean=torch.randn(n, 1, *shape), std=torch.full((n, 1, *shape), 0.05),
                        labels=conditions(torch.randint(1, prompts, (n,))))
    bank = KnowledgeBank(latents=torch.randn(n, *shape), conditions=conditions(torch.randint(0, prompts - 1, (n,))))
    return family, latents, bank


def modern_config_fields(model: str) -> dict[str, Any]:
    """TrainConfig fields the benchmark's step needs for these families."""
    return {"family": MODERN_MODELS[model].family}


#################################################################################
#     Baseline: diffusers' train_text_to_image_sdxl.py step (defaults)          #
#################################################################################


def sdxl_baseline_step(model: str, resolution: int, batch: int, device: str):
    """One step of ``examples/text_to_image/train_text_to_image_sdxl.py`` with its defaults and
    ``--mixed_precision fp16`` (fp32 on CPU). That script precomputes VAE latents and both text encoders'
    embeddings before training (as we do), so a step is: uniform t, ε-MSE, ``add_time_ids`` from each
    image's sizes, fp16 autocast + GradScaler, AdamW (wd 1e-2), grad-norm clip 1.0, no EMA."""
    from bench.throughput_sd import diffusers_script_update

    if model not in MODERN_MODELS or MODERN_MODELS[model].family != "sdxl":
        raise ValueError(f"model: the diffusers SDXL baseline is for SDXL / SDXL-tiny, not {model!r}")
    cuda = device.startswith("cuda")
    family, latents, _ = synthetic_modern_family(model, resolution, device, n=batch)
    unet = family.denoiser.to(device).train().requires_grad_(True)
    scheduler = family.noise_scheduler
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    model_input = latents.mean[:, 0].to(device)  # (B, C, h, w): the precomputed VAE latents
    emb = family.embeddings(latents.labels[:batch])  # embeds (B, L, D), pooled (B, D'), time_ids (B, 6)
    alphas = scheduler.alphas_cumprod.to(device)

    def step() -> None:
        diffusers_script_update(unet, lambda noisy, t: unet(
            noisy, t, encoder_hidden_states=emb["embeds"].float(),
            added_cond_kwargs={"text_embeds": emb["pooled"].float(), "time_ids": emb["time_ids"]}).sample,
            model_input, alphas, optimizer, scaler)

    return step
