"""Model families: how each kind of diffusion model plugs into the one Trainer."""

from __future__ import annotations

from models.config import TrainConfig
from models.families.base import Family


def load_family(config: TrainConfig, *, device: str = "cpu") -> Family:
    """Load the base model named by ``config.base_model`` as the family ``config.family``."""
    if config.family == "dit":
        from models.families.dit import DiTFamily

        return DiTFamily.from_pretrained(config.base_model, config=config, device=device)
    if config.family == "sd":
        from models.families.sd import SDFamily

        return SDFamily.from_pretrained(config.base_model, config=config, device=device)
    if config.family == "controlnet":
        from models.families.controlnet import ControlNetFamily

        return ControlNetFamily.from_pretrained(config.base_model, config=config, device=device)
    raise ValueError(f"family: unknown model family {config.family!r}")


def scan_dataset(config: TrainConfig, data_dir):
    """Validate the dataset layout the family reads (class folders, or captions [+ controls])."""
    if config.family == "dit":
        from models.data import scan_image_folder

        return scan_image_folder(data_dir, resolution=config.resolution,
                                 upscale_small_images=config.upscale_small_images)
    from models.captions import scan_caption_folder

    return scan_caption_folder(data_dir, resolution=config.resolution,
                               upscale_small_images=config.upscale_small_images,
                               require_conditioning=config.family == "controlnet"
                               and config.control_extractor == "none")


__all__ = ["Family", "load_family", "scan_dataset"]
