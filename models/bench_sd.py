"""Random-weight SD / ControlNet families for the throughput benchmark (no downloads).

``SD-1.5`` is the SD-1.5 UNet architecture (860M parameters, 4 levels 320..1280, cross-attention
768) on 64×64 latents at 512 px; ``SD-tiny`` is the test-sized UNet. ``+ControlNet`` adds a
ControlNet made from that UNet (``from_unet``) and trains it over the frozen UNet. The text
encoder is never run in a step (embeddings are cached), so a one-layer stand-in fills the table.
"""

from __future__ import annotations

import tempfile

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from models.bank import KnowledgeBank
from models.latents import LatentSet
from models.tiny import sd_scheduler, tiny_text_encoder, tiny_tokenizer, tiny_unet, tiny_vae

SD_MODELS = ("SD-1.5", "SD-tiny", "SD-1.5+ControlNet", "SD-tiny+ControlNet")
TEXT_LENGTH = 77


def build_sd_unet(name: str, resolution: int) -> UNet2DConditionModel:
    """A randomly initialised UNet: SD-1.5's architecture, or the tiny test one."""
    if name.startswith("SD-1.5"):
        if resolution % 8:
            raise ValueError("resolution: must be a multiple of 8 (the SD VAE downsamples by 8)")
        return UNet2DConditionModel(sample_size=resolution // 8, cross_attention_dim=768)
    return tiny_unet(sample_size=resolution // 2)


def synthetic_sd_family(model: str, resolution: int, device: str, n: int = 256):
    """(family, target latents, bank) with random weights, embeddings, latents and controls."""
    from models.families.controlnet import CONDITIONING_CHANNELS, ControlNetFamily
    from models.families.sd import SDFamily

    if model not in SD_MODELS:
        raise ValueError(f"model: unknown SD model {model!r}; choose from {', '.join(SD_MODELS)}")
    torch.manual_seed(0)
    unet = build_sd_unet(model, resolution)
    dim, size = unet.config.cross_attention_dim, unet.config.sample_size
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_tokenizer(tmp, max_length=TEXT_LENGTH)
    parts = dict(unet=unet, vae=tiny_vae(), text_encoder=tiny_text_encoder(hidden=dim, max_length=TEXT_LENGTH),
                 tokenizer=tokenizer, scheduler_config=dict(sd_scheduler().config), device=device)
    control = model.endswith("+ControlNet")
    if control:
        levels = 4 if model.startswith("SD-1.5") else 2
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS[:levels])
        family = ControlNetFamily(net, **parts)
    else:
        family = SDFamily(**parts)
    prompts = 64
    family.text_table = torch.randn(prompts, TEXT_LENGTH, dim)  # (P, L, D)
    family.bank_offset = 1
    text = torch.randint(1, prompts, (n,))
    labels, bank_cond = text, torch.randint(0, prompts - 1, (n,))
    if control:
        family.controls = torch.rand(2 * n, 3, resolution, resolution)  # (N + M, 3, H, W)
        family.bank_control_offset = n
        labels = torch.stack([text, torch.arange(n)], dim=1)  # (n, 2)
        bank_cond = torch.stack([bank_cond, torch.arange(n)], dim=1)
    latents = LatentSet(mean=torch.randn(n, 1, 4, size, size), std=torch.full((n, 1, 4, size, size), 0.05),
                        labels=labels)
    return family, latents, KnowledgeBank(latents=torch.randn(n, 4, size, size), conditions=bank_cond)
