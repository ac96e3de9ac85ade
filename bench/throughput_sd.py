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
from torch import nn

from models.bank import KnowledgeBank
from models.latents import LatentSet
from models.prompts import PromptTable
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
    family.text_table = PromptTable({"embeds": torch.randn(prompts, TEXT_LENGTH, dim)})  # (P, L, D)
    family.bank_offset = 1
    text = torch.randint(1, prompts, (n,))
    labels, bank_cond = text, torch.randint(0, prompts - 1, (n,))
    if control:
        family.controls = list(torch.rand(2 * n, 3, resolution, resolution))  # N + M of (3, H, W)
        family.bank_control_offset = n
        labels = torch.stack([text, torch.arange(n)], dim=1)  # (n, 2)
        bank_cond = torch.stack([bank_cond, torch.arange(n)], dim=1)
    latents = LatentSet(mean=torch.randn(n, 1, 4, size, size), std=torch.full((n, 1, 4, size, size), 0.05),
                        labels=labels)
    return family, latents, KnowledgeBank(latents=torch.randn(n, 4, size, size), conditions=bank_cond)


#################################################################################
#           Baseline: diffusers' train_text_to_image.py step (defaults)         #
#################################################################################


def sd_vae(model: str):
    """SD's AutoencoderKL architecture (4 levels, 8× downsampling), or the tiny one."""
    from diffusers import AutoencoderKL

    if not model.startswith("SD-1.5"):
        return tiny_vae()
    return AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         sample_size=512)


def sd_text_encoder(model: str):
    """CLIP ViT-L/14's text tower (SD-1.5's), or the tiny one; 77 tokens."""
    from transformers import CLIPTextConfig, CLIPTextModel

    if not model.startswith("SD-1.5"):
        return tiny_text_encoder(max_length=TEXT_LENGTH)
    return CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                       num_hidden_layers=12, num_attention_heads=12,
                                       max_position_embeddings=TEXT_LENGTH))


def diffusers_baseline_step(model: str, resolution: int, batch: int, device: str):
    """One step of ``examples/text_to_image/train_text_to_image.py`` with its defaults and
    ``--mixed_precision fp16`` (fp32 on CPU): VAE-encode and CLIP-encode every batch, uniform t,
    ε-MSE, fp16 autocast + GradScaler, AdamW (wd 1e-2), grad-norm clip 1.0, no EMA."""
    cuda = device.startswith("cuda")
    dtype = torch.float16 if cuda else torch.float32
    torch.manual_seed(0)
    unet = build_sd_unet(model, resolution).to(device).train()
    vae = sd_vae(model).to(device, dtype).requires_grad_(False)
    text_encoder = sd_text_encoder(model).to(device, dtype).requires_grad_(False)
    scheduler = sd_scheduler()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    images = torch.rand(batch, 3, resolution, resolution, device=device) * 2 - 1  # (B, 3, R, R)
    ids = torch.randint(0, text_encoder.config.vocab_size, (batch, TEXT_LENGTH), device=device)
    alphas = scheduler.alphas_cumprod.to(device)

    def step() -> None:
        with torch.no_grad():
            latents = vae.encode(images.to(dtype)).latent_dist.sample() * vae.config.scaling_factor  # (B, 4, h, w)
            emb = text_encoder(ids)[0]  # (B, 77, D)
        diffusers_script_update(unet, lambda noisy, t: unet(noisy, t, encoder_hidden_states=emb).sample, latents,
                                alphas, optimizer, scaler)

    return step


def diffusers_script_update(unet: nn.Module, predict, latents: torch.Tensor, alphas: torch.Tensor, optimizer,
                            scaler) -> None:
    """The update of diffusers' text-to-image scripts: uniform t, ε-MSE under fp16 autocast (on CUDA),
    GradScaler, grad-norm clip 1.0. ``predict(noisy, t)`` calls the UNet with the step's conditioning."""
    import torch.nn.functional as F

    noise = torch.randn_like(latents)
    t = torch.randint(0, len(alphas), (latents.shape[0],), device=latents.device)
    a = alphas[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    with torch.autocast(latents.device.type, dtype=torch.float16, enabled=latents.device.type == "cuda"):
        pred = predict(noisy, t)
    loss = F.mse_loss(pred.float(), noise.float())
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
