"""The offline demo: pre-train a tiny DiT on one domain, then Diff-Tune it on another.

Source domain: scikit-learn's bundled handwritten digits 0-4. Target domain: a few shots of digits
5-9. Everything is built here, with no downloads: a small VAE and a small DiT are pre-trained on the
source digits (that is the "base model"), and the target is tuned with Diff-Tuning. The transfer
benchmark's text-to-image preset also builds a small SD3-architecture (flow matching) base here, on
captioned copies of the same digits (:func:`caption_class_folders`, :func:`build_sd3_base_model`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from contract.outputs import step_name
from contract.train_config import TrainConfig, parse_config
from models.captions import METADATA, scan_caption_folder
from models.checkpoints import STATE_DIR
from models.data import load_image, scan_image_folder
from models.distributed import default_device
from models.run import RunResult, run_training
from models.tiny import save_dit_pipeline, tiny_dit, tiny_vae

RESOLUTION = 16
SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)

Say = Callable[[str], None]


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def write_digits(root: Path, classes: tuple[int, ...], per_class: int | None, *, offset: int = 0,
                 resolution: int = RESOLUTION) -> Path:
    """Write digits of ``classes`` as PNG class folders (upscaled from 8×8); ``offset`` skips images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root.mkdir(parents=True, exist_ok=True)
    for digit in classes:
        folder = root / f"digit_{digit}"
        folder.mkdir(exist_ok=True)
        rows = np.flatnonzero(digits.target == digit)[offset:]
        rows = rows[:per_class] if per_class else rows
        for i in rows:
            pixels = (digits.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (8, 8)
            img = Image.fromarray(pixels, mode="L").resize((resolution, resolution), Image.BICUBIC)
            img.save(folder / f"{i:04d}.png")
    return root


def prepare_domains(root: Path, shots: int = 10, held_out: int = 50,
                    resolution: int = RESOLUTION) -> dict[str, Path]:
    """Source (all digits 0-4), few-shot target (``shots`` of each of 5-9) and held-out target.

    Written once per settings: a folder prepared with other settings is rewritten.
    """
    settings = {"shots": shots, "held_out": held_out, "resolution": resolution}
    ready = root / "ready.json"
    names = ("source", "target", "target_heldout")
    if ready.exists() and json.loads(ready.read_text()) == settings:
        return {k: root / k for k in names}
    for name in names:
        shutil.rmtree(root / name, ignore_errors=True)
    paths = {
        "source": write_digits(root / "source", SOURCE_CLASSES, None, resolution=resolution),
        "target": write_digits(root / "target", TARGET_CLASSES, shots, resolution=resolution),
        "target_heldout": write_digits(root / "target_heldout", TARGET_CLASSES, held_out, offset=shots,
                                       resolution=resolution),
    }
    ready.write_text(json.dumps(settings))
    return paths


def caption_class_folders(classes: Path, out: Path, template: str) -> Path:
    """A captioned copy of the class-folder dataset ``classes`` under ``out`` (rewritten every call): the same
    class folders plus a metadata.jsonl giving each image its class's prompt (``class_prompt(template, folder)``)."""
    from models.evaluation.sample_quality import class_prompt

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(classes, out)
    lines = [json.dumps({"file_name": f"{folder.name}/{image.name}", "text": class_prompt(template, folder.name)})
             for folder in sorted(p for p in out.iterdir() if p.is_dir()) for image in sorted(folder.iterdir())]
    (out / METADATA).write_text("\n".join(lines) + "\n")
    return out


# ----------------------------------------------------------------------------------------------
# A small base model
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseModelSize:
    """Sizes of the VAE and DiT a base model is pre-trained with (defaults: the CPU demo)."""

    vae_channels: tuple[int, int] = (16, 32)
    dit_layers: int = 4
    dit_heads: int = 4
    dit_head_dim: int = 16
    batch_size: int = 32
    learning_rate: float = 1e-3


def train_vae(images: torch.Tensor, *, steps: int = 400, batch: int = 32, seed: int = 0, say: Say = print,
              channels: tuple[int, int] = (16, 32)):
    """Fit a small AutoencoderKL to ``images`` in [-1, 1] on their device; set its latent scaling factor."""
    torch.manual_seed(seed)
    vae = tiny_vae(channels=channels, norm_groups=16).to(images.device)
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        x = images[torch.randint(0, len(images), (batch,), generator=gen)]  # (B, 3, R, R)
        dist = vae.encode(x).latent_dist
        recon = vae.decode(dist.sample(generator=gen)).sample
        kl = dist.kl().mean() / x[0].numel()
        loss = torch.nn.functional.mse_loss(recon, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0:
            say(f"  vae step {step}/{steps}  reconstruction mse {loss.item():.4f}")
    vae.eval()
    with torch.no_grad():
        std = vae.encode(images[:512]).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    return vae.cpu()


def demo_config(base_model: str, **overrides) -> TrainConfig:
    """Hyperparameters sized for a 2-core CPU; every other knob keeps its reference default."""
    values = dict(
        base_model=base_model, resolution=RESOLUTION, batch_size=32, learning_rate=3e-4,
        ema_decay=0.999, ema_warmup=True, max_steps=400, checkpoint_every=200, sample_every=200,
        log_every=20, sample_steps=25, validation_labels=[0, 1, 2, 3, 4] * 4,
        bank={"size": 512, "batch_size": 128, "num_inference_steps": 25},
    )
    values.update(overrides)
    return parse_config(values)


def build_base_model(work: Path, source: Path, cache_dir: Path, *, steps: int = 1500, vae_steps: int = 400,
                     resolution: int = RESOLUTION, size: BaseModelSize = BaseModelSize(), say: Say = print) -> Path:
    """Pre-train VAE + DiT on the source images (digits by default); return the base pipeline folder (cached).

    Trains on the GPU when there is one (see :func:`models.distributed.default_device`).
    """
    base = work / "base_model"
    if (base / "model_index.json").exists():
        say(f"base model: reusing {base}")
        return base
    say(f"base model: training a small VAE on {source.name}")
    folder = scan_image_folder(source, resolution=resolution, upscale_small_images=True)
    images = torch.stack([load_image(p, resolution) for p in folder.files]).to(default_device())
    vae = train_vae(images, steps=vae_steps, say=say, channels=size.vae_channels)
    torch.manual_seed(0)
    dit = tiny_dit(sample_size=resolution // 2, layers=size.dit_layers, heads=size.dit_heads,
                   head_dim=size.dit_head_dim)
    init = save_dit_pipeline(work / "base_init", dit, vae,
                             id2label={i: name for i, name in enumerate(folder.class_names)})
    say(f"base model: pre-training a DiT on {len(folder)} source images for {steps} steps")
    config = demo_config(str(init), method="standard", learning_rate=size.learning_rate, batch_size=size.batch_size,
                         max_steps=steps, resolution=resolution,
                         upscale_small_images=True,
                         checkpoint_every=steps, sample_every=steps, log_every=250,
                         validation_labels=[0, 1, 2, 3, 4] * 4)
    result = run_training(config, data_dir=source, out_dir=work / "pretrain", cache_dir=cache_dir,
                          on_progress=lambda p: say(f"  pretrain step {p.step}/{p.total_steps} loss {p.loss:.4f}"))
    result.fit.last_checkpoint.rename(base)
    return base


def sd3_transformer(sample_size: int, size: BaseModelSize, text_dim: int = 64):
    """An MMDiT with ``size``'s blocks (``dit_layers``), heads and head width on (4, sample_size, sample_size)
    latents; ``text_dim``: the width of the CLIP hidden states and of the pooled projections."""
    from diffusers import SD3Transformer2DModel

    width = size.dit_heads * size.dit_head_dim
    return SD3Transformer2DModel(sample_size=sample_size, patch_size=2, in_channels=4, out_channels=4,
                                 num_layers=size.dit_layers, attention_head_dim=size.dit_head_dim,
                                 num_attention_heads=size.dit_heads, joint_attention_dim=text_dim,
                                 caption_projection_dim=width, pooled_projection_dim=text_dim,
                                 pos_embed_max_size=sample_size)


def save_sd3_pipeline(path: Path, vae, transformer, *, max_length: int = 32) -> Path:
    """A StableDiffusion3Pipeline folder around ``vae`` and ``transformer``: two random tiny CLIP encoders with
    projections (hidden 32 each, ``max_length`` tokens: byte-level, so one token per character), no T5."""
    import tempfile

    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from models.tiny import tiny_clip_with_projection, tiny_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizers = [tiny_tokenizer(Path(tmp) / str(i), max_length=max_length) for i in (1, 2)]
    encoders = [tiny_clip_with_projection(max_length=max_length) for _ in tokenizers]
    StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=encoders[0], tokenizer=tokenizers[0], text_encoder_2=encoders[1], tokenizer_2=tokenizers[1],
        text_encoder_3=None, tokenizer_3=None).save_pretrained(path, safe_serialization=True)
    return path


def build_sd3_base_model(work: Path, source: Path, cache_dir: Path, *, steps: int = 1500, vae_steps: int = 400,
                         resolution: int = RESOLUTION, size: BaseModelSize = BaseModelSize(),
                         train: dict | None = None, say: Say = print) -> Path:
    """Pre-train an SD3-architecture base on the captioned ``source``; return its pipeline folder (cached).

    A small VAE (:func:`train_vae`, shift 0) and random frozen text encoders, then the MMDiT trained by flow
    matching with the library itself (``family: sd3``, ``method: standard``, ``peft: full``; ``train``: extra
    TrainConfig fields, e.g. ``max_sequence_length``). The base is the last checkpoint's pipeline.
    """
    base = work / "base_model"
    if (base / "model_index.json").exists():
        say(f"base model: reusing {base}")
        return base
    folder = scan_caption_folder(source, resolution=resolution)
    say(f"base model: training a small VAE on {len(folder)} captioned source digits")
    images = torch.stack([load_image(p, resolution) for p in folder.files]).to(default_device())
    vae = train_vae(images, steps=vae_steps, say=say, channels=size.vae_channels)
    vae.register_to_config(shift_factor=0.0)
    torch.manual_seed(0)
    init = save_sd3_pipeline(work / "base_init", vae, sd3_transformer(resolution // 2, size))
    say(f"base model: pre-training an SD3 MMDiT by flow matching for {steps} steps")
    config = demo_config(str(init), **{
        "validation_labels": None, "validation_prompts": sorted(set(folder.captions)), **(train or {}),
        "family": "sd3", "method": "standard", "peft": "full", "learning_rate": size.learning_rate,
        "batch_size": size.batch_size, "max_steps": steps, "resolution": resolution, "checkpoint_every": steps,
        "sample_every": steps, "log_every": 250})
    result = run_training(config, data_dir=source, out_dir=work / "pretrain", cache_dir=cache_dir,
                          on_progress=lambda p: p.step % 250 == 0 and say(
                              f"  pretrain step {p.step}/{p.total_steps} loss {p.loss:.4f}"))
    shutil.copytree(result.fit.last_checkpoint, base, ignore=shutil.ignore_patterns(STATE_DIR, "meta.json"))
    return base


# ----------------------------------------------------------------------------------------------
# The demo
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoResult:
    """Paths the demo prints at the end."""

    base_model: Path
    run: RunResult
    checkpoint: Path
    samples: Path


def run_demo(work: Path, *, cache_dir: Path | None = None, steps: int = 400, base_steps: int = 1500,
             vae_steps: int = 400, say: Say = print, **overrides) -> DemoResult:
    """Build (or reuse) the base model, Diff-Tune it on few-shot target digits, return outputs.

    ``overrides`` are TrainConfig fields for the tuning run (e.g. a smaller bank in tests).
    """
    work = Path(work)
    cache_dir = cache_dir or work / "cache"
    domains = prepare_domains(work / "data")
    base = build_base_model(work, domains["source"], cache_dir, steps=base_steps, vae_steps=vae_steps, say=say)
    say(f"diff-tuning: {domains['target']} (10 shots of each of digits 5-9) for {steps} steps")
    config = demo_config(str(base), **{"max_steps": steps, "checkpoint_every": max(steps // 2, 1),
                                       "sample_every": max(steps // 2, 1), **overrides})
    out = work / "difftune_run"
    result = run_training(
        config, data_dir=domains["target"], out_dir=out, cache_dir=cache_dir, resume=True,
        on_phase=lambda phase, d, t: say(f"  {phase}: {d}/{t}") if d == t else None,
        on_progress=lambda p: say(f"  step {p.step}/{p.total_steps}  loss {p.loss:.4f} (target "
                                  f"{p.loss_target:.4f}, bank {p.loss_bank:.4f})  {p.images_per_sec:.0f} img/s"),
    )
    step = result.fit.step
    return DemoResult(base_model=base, run=result, checkpoint=result.fit.last_checkpoint,
                      samples=out / "samples" / f"{step_name(step)}.png")
