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
    from models.config import parse_config

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
