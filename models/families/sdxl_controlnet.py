"""ControlNet on a frozen Stable Diffusion XL base: only the ControlNet trains.

Everything ControlNet-specific (loading or ``ControlNetModel.from_unet``, controls, bank controls, the
canny-F1 metric, export) is :class:`models.families.controlnet.ControlNetMixin`; everything SDXL-specific
(two text encoders, the null condition, micro-conditioning) is :class:`models.families.sdxl.SDXLFamily`.
Both the ControlNet and the UNet get SDXL's ``added_cond_kwargs`` (pooled text, size/crop ids).

Conditions are rows of 8 integers: SDXL's 7 (prompt id, orig_h, orig_w, crop_top, crop_left, target_h,
target_w) then the control id. The CFG drop changes only the prompt id; bank rows are (bank prompt id or 0,
R, R, 0, 0, R, R, control id of that bank image).
"""

from __future__ import annotations

from typing import Any

from diffusers import StableDiffusionXLControlNetPipeline

from contract.train_config import TrainConfig
from models.families.controlnet import ControlNetMixin
from models.families.sdxl import SDXLFamily


class SDXLControlNetFamily(ControlNetMixin, SDXLFamily):
    """A ControlNet tuned on (caption, control, image) triples over a frozen SDXL."""

    name = "controlnet_sdxl"
    pipeline_class = StableDiffusionXLControlNetPipeline

    @classmethod
    def base_parts(cls, location: str, *, config: TrainConfig | None, device: str) -> dict[str, Any]:
        return cls.load_parts(location, "Stable Diffusion XL (+ ControlNet)", config=config, device=device)
