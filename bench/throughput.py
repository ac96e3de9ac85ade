"""Throughput benchmarks with random weights: training steps and knowledge-bank generation.

Training throughput runs the real Trainer on synthetic cached latents (training in this library
always reads VAE latents from a cache, so the VAE is not part of a step). Figures are printed as
JSON by ``difftune bench``; nothing here is a timed test.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DiTTransformer2DModel
from torch.utils.flop_counter import FlopCounterMode

from contract.train_config import MAX_STEPS, parse_config
from models.bank import KnowledgeBank
from models.base_originals import hold_without_originals
from models.families.dit import DiTFamily
from models.latents import LatentSet
from models.memory_savers import param_count
from models.precision import autocast
from models.tiny import ddpm_scheduler, tiny_vae

# depth, hidden size, heads (DiT paper, Table 1); patch size from the name.
DIT_SIZES: dict[str, tuple[int, int, int]] = {
    "DiT-S": (12, 384, 6), "DiT-B": (12, 768, 12), "DiT-L": (24, 1024, 16), "DiT-XL": (28, 1152, 16),
    "DiT-tiny": (2, 64, 2),
}

# Dense bf16 tensor-core peaks (FLOP/s) used for MFU.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


def build_dit(name: str, resolution: int, *, num_classes: int = 1000, learned_sigma: bool = True) -> DiTTransformer2DModel:
    """A randomly initialised DiT like ``DiT-XL/2`` for ``resolution`` px (latents at resolution/8)."""
    try:
        size, patch = name.split("/")
        depth, hidden, heads = DIT_SIZES[size]
        patch = int(patch)
    except (ValueError, KeyError):
        raise ValueError(f"model: unknown DiT {name!r}; choose from "
                         f"{', '.join(f'{k}/2' for k in DIT_SIZES)}") from None
    if resolution % 8:
        raise ValueError("resolution: must be a multiple of 8 (the SD VAE downsamples by 8)")
    return DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=4,
                                 out_channels=8 if learned_sigma else 4, num_layers=depth,
                                 sample_size=resolution // 8, patch_size=patch, num_embeds_ada_norm=num_classes)


def peak_flops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class BenchSetup:
    """What one throughput measurement runs."""

    model: str = "DiT-XL/2"
    resolution: int = 256
    method: str = "difftune"
    batch: int = 32
    compile: bool = False
    gradient_checkpointing: bool = False
    peft: str = "full"
    optimizer: str = "adamw"  # the memory savers (README "Fitting large models")
    base_precision: str = "fp32"
    ema_device: str = "auto"
    steps: int = 20
    warmup: int = 5
    device: str = "cuda"


def _synthetic_family(setup: BenchSetup, *, tuned: bool = True) -> tuple[DiTFamily, LatentSet, KnowledgeBank]:
    """A random DiT family (a 1000-class target when ``tuned``) with random cached latents and bank;
    SD-* models (bench/throughput_sd.py) give SD or ControlNet families, SDXL / SD3.5 / Flux.1 models
    (bench/throughput_modern.py) theirs."""
    from bench.throughput_modern import MODERN_MODELS, synthetic_modern_family

    if setup.model in MODERN_MODELS:
        family, latents, bank = synthetic_modern_family(setup.model, setup.resolution, setup.device)
    elif setup.model.startswith("SD-"):
        from bench.throughput_sd import synthetic_sd_family

        family, latents, bank = synthetic_sd_family(setup.model, setup.resolution, setup.device)
    else:
        family, latents, bank = _synthetic_dit_family(setup, tuned)
    # built in memory and never saved: a base held in bf16/fp8/nf4 keeps no copy of its original weights
    hold_without_originals(family.denoiser)
    return family, latents, bank


def _synthetic_dit_family(setup: BenchSetup, tuned: bool) -> tuple[DiTFamily, LatentSet, KnowledgeBank]:
    torch.manual_seed(0)
    transformer = build_dit(setup.model, setup.resolution)
    family = DiTFamily(transformer, tiny_vae(), dict(ddpm_scheduler().config), device=setup.device)
    if tuned:
        family.setup_labels([str(i) for i in range(1000)])
    n, size = 256, setup.resolution // 8
    latents = LatentSet(mean=torch.randn(n, 2, 4, size, size), std=torch.full((n, 2, 4, size, size), 0.05),
                        labels=torch.randint(0, 1000, (n,)))
    bank = KnowledgeBank(latents=torch.randn(n, 4, size, size), conditions=torch.randint(0, 1000, (n,)))
    return family, latents, bank


def train_flops_per_image(trainer) -> float:
    """FLOPs of one forward + backward pass per image, counted by torch's FlopCounterMode."""
    latents, t, cond = trainer.next_batch()
    latents, t = latents.to(trainer.device), t.to(trainer.device)
    with FlopCounterMode(display=False) as counter:
        with autocast(trainer.device, trainer.config.mixed_precision):  # as the step runs (a bf16 base needs it)
            out = trainer.family.predict(trainer.module, latents, t, cond)
        out.float().pow(2).mean().backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / latents.shape[0]


def time_steps(step: Callable[[], Any], setup: BenchSetup) -> dict[str, Any]:
    """Warm up, then time ``setup.steps`` calls of ``step``: images/s, step times, peak memory."""
    for _ in range(setup.warmup):
        step()
    _sync(setup.device)
    if setup.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(setup.device)
    times = []
    for _ in range(setup.steps):
        start = time.perf_counter()
        step()
        _sync(setup.device)
        times.append(time.perf_counter() - start)
    mean = statistics.mean(times)
    return {"images_per_sec": setup.batch / mean, "step_time_ms": mean * 1e3,
            "step_time_p50_ms": statistics.median(times) * 1e3,
            "peak_memory_gb": (torch.cuda.max_memory_allocated(setup.device) / 2**30
                               if setup.device.startswith("cuda") else None)}


def _train_config(setup: BenchSetup, family):
    return parse_config({"method": setup.method, "batch_size": setup.batch, "compile": setup.compile,
                         "gradient_checkpointing": setup.gradient_checkpointing, "peft": setup.peft,
                         "optimizer": setup.optimizer, "base_precision": setup.base_precision,
                         "ema_device": setup.ema_device, "mixed_precision": "bf16" if setup.base_precision !=
                         "fp32" else "auto", "family": family.name,
                         "resolution": setup.resolution, "max_steps": MAX_STEPS})


def bench_training(setup: BenchSetup, tmp: Path) -> dict[str, Any]:
    """images/s, step time, peak memory and MFU of the real training step."""
    from models.trainer import Trainer

    family, latents, bank = _synthetic_family(setup)
    config = _train_config(setup, family)
    trainer = Trainer(family, config, latents, bank if config.uses_bank else None, tmp)
    params = param_count(trainer.module)  # a 4-bit weight counts once, not by its packed bytes
    flops = train_flops_per_image(trainer)
    timing = time_steps(trainer.train_step, setup)
    ips = timing["images_per_sec"]
    peak = peak_flops(setup.device)
    return {
        "benchmark": "train", **setup.__dict__,
        "params_m": params / 1e6,
        "trainable_params_m": sum(p.numel() for p in trainer.module.parameters() if p.requires_grad) / 1e6,
        **timing,
        "train_gflops_per_image": flops / 1e9,
        "mfu": (flops * ips / peak) if peak else None,
        "device_name": torch.cuda.get_device_name(setup.device) if setup.device.startswith("cuda") else "cpu",
    }


def bench_memory_plan(setup: BenchSetup, tmp: Path) -> dict[str, Any]:
    """The memory plan's accounting (``models/plan.py``) against the device's measured peak of the same
    step: the plan's accuracy (target: within 10% on a GPU)."""
    from models.plan import GB, measure_step
    from models.trainer import Trainer

    family, latents, bank = _synthetic_family(setup)
    config = _train_config(setup, family)
    trainer = Trainer(family, config, latents, bank if config.uses_bank else None, tmp)
    trainer.train_step()  # the optimizer state exists from here on, as in a run's later steps
    parts, peak = measure_step(trainer)
    accounted = sum(parts.values())
    return {"benchmark": "memory_plan", **setup.__dict__, "parts_gb": {k: v / GB for k, v in parts.items()},
            "accounted_gb": accounted / GB, "measured_peak_gb": peak / GB if peak else None,
            "accounted_over_peak": accounted / peak if peak else None}


def bench_bank(setup: BenchSetup, *, images: int = 64, steps: int = 50, guidance: float = 1.5) -> dict[str, Any]:
    """Knowledge-bank generation speed (DDIM ``steps`` with CFG) in images/s."""
    family, _, _ = _synthetic_family(setup, tuned=False)
    config = parse_config({"resolution": setup.resolution, "bank": {"size": images, "batch_size": setup.batch,
                                                                     "num_inference_steps": steps,
                                                                     "guidance_scale": guidance}})
    gen = torch.Generator().manual_seed(0)
    family.generate_bank_batch(min(setup.batch, 4), config, gen)  # warm-up
    _sync(setup.device)
    start, done = time.perf_counter(), 0
    while done < images:
        n = min(setup.batch, images - done)
        family.generate_bank_batch(n, config, gen)
        done += n
    _sync(setup.device)
    elapsed = time.perf_counter() - start
    return {"benchmark": "bank", **setup.__dict__, "images": images, "ddim_steps": steps,
            "guidance_scale": guidance, "images_per_sec": images / elapsed, "seconds": elapsed}


def bench_diffusers_baseline(setup: BenchSetup) -> dict[str, Any]:
    """The same figures for the step of diffusers' own training script: train_text_to_image.py for SD
    models (bench/throughput_sd.py), train_text_to_image_sdxl.py for SDXL (bench/throughput_modern.py)."""
    from bench.throughput_modern import sdxl_baseline_step
    from bench.throughput_sd import diffusers_baseline_step

    if setup.model in ("SDXL", "SDXL-tiny"):
        script, step = "train_text_to_image_sdxl", sdxl_baseline_step(setup.model, setup.resolution, setup.batch,
                                                                        setup.device)
    elif setup.model.startswith("SD-") and "ControlNet" not in setup.model:
        script, step = "train_text_to_image", diffusers_baseline_step(setup.model, setup.resolution, setup.batch,
                                                                       setup.device)
    else:
        raise ValueError(f"model: the diffusers baseline is for SD-1.5, SD-tiny, SDXL or SDXL-tiny, "
                         f"not {setup.model!r}")
    return {"benchmark": f"diffusers_{script}", "model": setup.model, "resolution": setup.resolution,
            "batch": setup.batch, "device": setup.device, **time_steps(step, setup)}
