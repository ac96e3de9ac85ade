"""Loading a diffusers pipeline folder's components, each named as in its ``model_index.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from contract.train_config import ConfigError


def check_folder(location: str, needed: tuple[str, ...], what: str) -> bool:
    """True for a local folder (checked to hold ``needed`` sub-folders), False for a hub id."""
    if not location:
        raise ConfigError("base_model: no base model location given")
    path = Path(location)
    looks_local = path.is_absolute() or location.startswith(".") or path.exists()
    missing = [n for n in needed if not (path / n).is_dir()]
    if looks_local and missing:
        raise ConfigError(f"base_model: {location!r} is not a diffusers {what} folder (no {missing[0]}/ inside)")
    return looks_local


def load_components(location: str, classes: dict[str, Any], *, what: str, optional: tuple[str, ...] = (),
                    dtype: torch.dtype | None = None) -> dict[str, Any]:
    """``{name: cls.from_pretrained(location, subfolder=name)}``; an ``optional`` part missing from a
    local folder is None (as diffusers allows, e.g. SD3 without T5). Models load in ``dtype``."""
    local = check_folder(location, tuple(n for n in classes if n not in optional), what)
    parts: dict[str, Any] = {}
    try:
        for name, cls in classes.items():
            if name in optional and local and not (Path(location) / name).is_dir():
                parts[name] = None
                continue
            kwargs = {"torch_dtype": dtype} if dtype is not None and hasattr(cls, "dtype") else {}
            parts[name] = cls.from_pretrained(location, subfolder=name, **kwargs)
    except (OSError, ValueError) as err:
        raise ConfigError(f"base_model: cannot load a {what} pipeline from {location!r}: {err}") from err
    return parts


def frozen_dtype(device: str, config) -> torch.dtype | None:
    """bf16 for frozen text encoders on a GPU with mixed precision; as stored otherwise."""
    if device.startswith("cuda") and (config is None or config.mixed_precision != "no"):
        return torch.bfloat16
    return None
