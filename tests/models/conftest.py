"""Fixtures for the training library: a tiny offline DiT base model, image folders, configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RESOLUTION = 16


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A random tiny DiT pipeline (16 px, 1000-class table, classes 0-4 named)."""
    from models.tiny import build_tiny_dit_pipeline

    path = tmp_path_factory.mktemp("base") / "tiny_dit"
    return build_tiny_dit_pipeline(path, seed=0, resolution=RESOLUTION,
                                   id2label={i: f"source_{i}" for i in range(5)})


def write_class_folder(root: Path, classes: dict[str, int], size: int = 20, seed: int = 0) -> Path:
    """Class sub-folders of random RGB PNGs: ``{class_name: count}``."""
    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Three classes of four random 20x20 images."""
    return write_class_folder(tmp_path / "data", {"cat": 4, "dog": 4, "owl": 4})


def tiny_config(base: Path, **overrides):
    """A TrainConfig for the tiny base model: small batch, few steps, cheap sampling."""
    from contract.train_config import parse_config

    values = dict(base_model=str(base), resolution=RESOLUTION, batch_size=8, max_steps=4, learning_rate=1e-3,
                  checkpoint_every=2, sample_every=4, log_every=1, sample_steps=3, keep_checkpoints=2,
                  ema_warmup=True, bank={"size": 12, "batch_size": 4, "num_inference_steps": 3})
    values.update(overrides)
    return parse_config(values)


@pytest.fixture
def make_config(tiny_base):
    def make(**overrides):
        return tiny_config(tiny_base, **overrides)

    return make


# --- Stable Diffusion and ControlNet -------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A random tiny SD pipeline (16 px; a ControlNet is made from its UNet when asked)."""
    from models.tiny import build_tiny_sd_pipeline

    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("base") / "tiny_sd", seed=0, resolution=RESOLUTION)


def write_caption_folder(root: Path, captions: list[str], size: int = 20, seed: int = 0,
                         controls: bool = False, sizes: list[tuple[int, int]] | None = None) -> Path:
    """Random RGB PNGs listed in metadata.jsonl (with square-outline control images when asked), each
    ``size`` square or of ``sizes`` (width, height)."""
    import json

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, text in enumerate(captions):
        width, height = sizes[i] if sizes else (size, size)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / f"{i}.png")
        row = {"file_name": f"{i}.png", "text": text}
        if controls:
            edge = np.zeros((height, width, 3), np.uint8)
            lo, bottom, right = 3 + i % 4, height - 4, width - 4
            edge[lo, lo:right] = edge[bottom, lo:right] = edge[lo:bottom, lo] = edge[lo:bottom + 1, right] = 255
            Image.fromarray(edge).save(root / f"{i}_control.png")
            row["conditioning_file_name"] = f"{i}_control.png"
        lines.append(json.dumps(row))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def caption_folder(tmp_path) -> Path:
    """Four captioned random 20x20 images with square-outline controls."""
    return write_caption_folder(tmp_path / "captions", ["a red cat", "a blue dog", "an owl", "a yak"],
                                controls=True)


@pytest.fixture
def make_sd_config(tiny_sd):
    def make(**overrides):
        values = dict(family="sd", sample_every=100, validation_guidance_scale=2.0)
        values.update(overrides)
        return tiny_config(tiny_sd, **values)

    return make


TINY_BUILDERS = {"sd": "build_tiny_sd_pipeline", "sd3": "build_tiny_sd3_pipeline", "sdxl": "build_tiny_sdxl_pipeline",
                 "flux": "build_tiny_flux_pipeline"}


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """``tiny_pipeline(family)``: the family's tiny random pipeline folder (16 px), built once."""
    import models.tiny

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            build = getattr(models.tiny, TINY_BUILDERS[family])
            built[family] = build(tmp_path_factory.mktemp("base") / f"tiny_{family}", seed=0, resolution=RESOLUTION)
        return built[family]

    return get


@pytest.fixture
def make_family_config(tiny_pipeline):
    """``make(family, **overrides)``: a tiny text-to-image config for any text family (T5 at 16 tokens)."""
    def make(family: str, **overrides):
        values = dict(family=family, sample_every=100, validation_guidance_scale=2.0, max_sequence_length=16)
        values.update(overrides)
        return tiny_config(tiny_pipeline(family), **values)

    return make


def run_with_convergence(config, data_dir, tmp_path):
    """Two steps scoring the family's convergence metric every step: (last checkpoint, the evaluation
    recorded in its meta.json, the progress reports), with the history checked."""
    import json

    from models.run import run_training

    config = config.model_copy(update=dict(max_steps=2, checkpoint_every=2, sample_every=2, eval_every=1,
                                           convergence_threshold=0.01))
    seen = []
    result = run_training(config, data_dir=data_dir, out_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                          on_progress=seen.append)
    last = result.fit.last_checkpoint
    evaluation = json.loads((last / "meta.json").read_text())["metrics"]["evaluation"]
    assert evaluation["metric"] == "canny_f1" and [s for s, _ in evaluation["history"]] == [1, 2]
    assert seen[-1].evaluation["canny_f1"] == evaluation["canny_f1"]
    return config, last, evaluation


def pipeline_class(family: str):
    """The diffusers pipeline class a family's checkpoints are saved as."""
    import diffusers

    from contract.families import family as family_spec

    return getattr(diffusers, family_spec(family).pipeline)


def example_inputs(family, config, n: int = 2):
    """Fixed latents, model times and prompt ids ("", "a red cat") for calling a denoiser directly."""
    import torch

    gen = torch.Generator().manual_seed(1)
    family.text_table = family.prompt_table(["", "a red cat"], None)
    x = torch.randn(n, *family.latent_shape, generator=gen)
    process = family.noise_process(config)
    levels = torch.cat([process.sample_levels(1, "target", gen), process.sample_levels(n - 1, "bank", gen)])
    return x, process.model_time(levels), torch.arange(n) % 2


def with_random_lora(model, config, seed: int = 3):
    """Add ``config``'s LoRA to ``model`` and give its (zero-initialised) B matrices random values."""
    import torch

    from models.peft import prepare_trainable

    trainable = prepare_trainable(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return trainable


def build_trainer(config, data_dir, out_dir, cache_dir):
    """What run_training does before fitting, for any family: dataset, base, bank, target, Trainer."""
    from models.bank import bank_for
    from models.families import load_family, scan_dataset
    from models.trainer import Trainer

    family = load_family(config)
    dataset = scan_dataset(config, data_dir)
    family.attach_dataset(dataset, config)
    bank = bank_for(family, config, cache_dir, dataset) if config.uses_bank else None
    latents = family.prepare_target(dataset, config, bank, cache_dir=cache_dir)
    return Trainer(family, config, latents, bank, out_dir)


def check_exact_resume(config, data_dir, tmp_path, stop_at: int, rel: float = 0.0):
    """Run ``config.max_steps`` unbroken, and stop at ``stop_at`` then resume in a fresh Trainer:
    the later losses and the final weights must be equal bit for bit (where the kernels themselves are
    not deterministic between two fresh runs: the losses within ``rel``). Returns the resumed Trainer."""
    import torch

    from models import checkpoints as ckpt

    unbroken = build_trainer(config, data_dir, tmp_path / "a", tmp_path / "c")
    losses = [unbroken.train_step()["loss"].item() for _ in range(config.max_steps)]
    first = build_trainer(config.model_copy(update={"max_steps": stop_at}), data_dir, tmp_path / "b", tmp_path / "c")
    first.fit()
    resumed = build_trainer(config, data_dir, tmp_path / "b", tmp_path / "c")
    resumed.resume(ckpt.latest_checkpoint(tmp_path / "b"))
    assert resumed.step == stop_at
    state = resumed.evaluation and dict(resumed.evaluation)
    later = [resumed.train_step()["loss"].item() for _ in range(config.max_steps - stop_at)]
    assert later == (pytest.approx(losses[stop_at:], rel=rel) if rel else losses[stop_at:])
    for (name, a), b in zip(unbroken.module.state_dict().items(), resumed.module.state_dict().values(), strict=True):
        assert rel or torch.equal(a, b), name  # with rel, Adam turns last-bit gradient noise into lr-sized steps
    resumed.evaluation_at_resume = state
    return resumed
