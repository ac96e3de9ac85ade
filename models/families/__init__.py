"""Model families: how each kind of diffusion model plugs into the one Trainer.

Which families exist is decided by :mod:`contract.families` (one registry); this package holds
their implementations and loads the one a config names.
"""

from __future__ import annotations

import importlib

from contract.families import DatasetLayout, family
from contract.train_config import TrainConfig
from models.families.base import Family


def family_class(name: str) -> type[Family]:
    """The ``Family`` subclass registered for ``name`` (imported on first use)."""
    module, _, cls = family(name).implementation.partition(":")
    return getattr(importlib.import_module(module), cls)


def load_family(config: TrainConfig, *, device: str = "cpu") -> Family:
    """Load the base model named by ``config.base_model`` as the family ``config.family``."""
    loaded = family_class(config.family).from_pretrained(config.base_model, config=config, device=device)
    if config.text_encoder_device == "cpu" and hasattr(loaded, "offload_text_encoders"):
        loaded.offload_text_encoders()
    return loaded


def scan_dataset(config: TrainConfig, data_dir):
    """Validate the dataset layout the family reads (class folders, or captions [+ controls]) and, with
    ``aspect_buckets``, give each image its bucket."""
    spec = family(config.family)
    if spec.dataset_layout is DatasetLayout.CLASS_FOLDERS:
        from models.data import scan_image_folder

        return scan_image_folder(data_dir, resolution=config.resolution,
                                 upscale_small_images=config.upscale_small_images)
    from models.captions import scan_caption_folder, with_buckets

    # with buckets, an image's size is checked against its bucket rather than the square
    folder = scan_caption_folder(data_dir, resolution=config.resolution,
                                 upscale_small_images=config.upscale_small_images or config.aspect_buckets,
                                 require_conditioning=spec.needs_controls and config.control_extractor == "none")
    return with_buckets(folder, config) if config.aspect_buckets else folder


__all__ = ["Family", "family_class", "load_family", "scan_dataset"]
