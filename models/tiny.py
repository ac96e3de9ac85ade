"""Tiny random pipelines built offline, for tests, demos and CPU benchmarks.

No downloads: every component is constructed from a config. The DiT pipeline here is a real
diffusers folder that ``DiTPipeline.from_pretrained`` loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiTPipeline, DiTTransformer2DModel


def tiny_vae(latent_channels: int = 4, channels: tuple[int, int] = (32, 64), norm_groups: int = 32,
             mid_attention: bool = False) -> AutoencoderKL:
    """A 2-level AutoencoderKL (downsamples by 2). Mid-block attention is off: on CPU it costs
    several times the rest of the network at these sizes."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=list(channels),
        layers_per_block=1, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=norm_groups, sample_size=16,
        mid_block_add_attention=mid_attention,
    )


def tiny_dit(sample_size: int = 8, num_classes: int = 1000, layers: int = 2, heads: int = 2,
             head_dim: int = 16, learned_sigma: bool = False) -> DiTTransformer2DModel:
    """A DiT of ``layers`` blocks on (4, sample_size, sample_size) latents."""
    return DiTTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=4,
        out_channels=8 if learned_sigma else 4, num_layers=layers, sample_size=sample_size, patch_size=2,
        num_embeds_ada_norm=num_classes,
    )


def ddpm_scheduler() -> DDPMScheduler:
    """DiT's training schedule: 1000 linear betas from 1e-4 to 0.02, ε-prediction."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         clip_sample=False)


def save_dit_pipeline(path: str | Path, transformer: DiTTransformer2DModel, vae: AutoencoderKL,
                      id2label: dict[int, str] | None = None) -> Path:
    """Write a diffusers DiT folder (safetensors) with an optional ``id2label`` in model_index.json."""
    path = Path(path)
    DiTPipeline(transformer=transformer, vae=vae, scheduler=ddpm_scheduler()).save_pretrained(
        path, safe_serialization=True)
    if id2label:
        index_file = path / "model_index.json"
        index = json.loads(index_file.read_text())
        index["id2label"] = {str(k): v for k, v in id2label.items()}
        index_file.write_text(json.dumps(index, indent=2))
    return path


def build_tiny_dit_pipeline(path: str | Path, *, seed: int = 0, num_classes: int = 1000,
                            resolution: int = 16, learned_sigma: bool = False,
                            id2label: dict[int, str] | None = None) -> Path:
    """Random tiny DiT pipeline for ``resolution`` px images (latents are resolution/2)."""
    torch.manual_seed(seed)
    return save_dit_pipeline(path, tiny_dit(sample_size=resolution // 2, num_classes=num_classes,
                                            learned_sigma=learned_sigma), tiny_vae(), id2label)
