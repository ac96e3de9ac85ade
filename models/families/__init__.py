"""Model families: how each kind of diffusion model plugs into the one Trainer."""

from __future__ import annotations

from models.config import TrainConfig
from models.families.base import Family


def load_family(config: TrainConfig, *, device: str = "cpu") -> Family:
    """Load the base model named by ``config.base_model`` as the family ``config.family``."""
    if config.family == "dit":
        from models.families.dit import DiTFamily

        return DiTFamily.from_pretrained(config.base_model, config=config, device=device)
    raise ValueError(f"family: unknown model family {config.family!r}")


__all__ = ["Family", "load_family"]
