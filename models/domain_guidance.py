"""Domain Guidance (Zhong et al., ICLR 2025): guide a tuned model with its pre-trained base.

Classifier-free guidance extrapolates from the tuned model's own unconditional branch,
ε = ε_tuned(x, ∅) + w·(ε_tuned(x, c) − ε_tuned(x, ∅)); Domain Guidance takes that branch from the base
model instead, ε = ε_base(x, ∅) + w·(ε_tuned(x, c) − ε_base(x, ∅)) (text-to-image: the base on the
empty prompt), so guidance pushes samples from what the base knows towards the target domain. It needs
no training, so it applies to any tuned model; its cost is the base's forward pass in place of the
tuned model's unconditional one, and the base's weights in memory:

- LoRA: none extra: the base is the tuned model with its adapters switched off (``WithoutAdapters``);
- ControlNet: none extra: the base is the frozen UNet without the ControlNet's residuals;
- full and DiffFit: a second copy of the denoiser (kept in host memory while training, on the device
  while sampling; a Flux-sized model is ~24 GB in bf16).

Flux.1-dev is guidance-distilled (no unconditional branch at sampling): Domain Guidance does not apply.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from peft.tuners.lora import LoraLayer
from torch import nn

from models.ema import host_copy


class WithoutAdapters:
    """Calls a LoRA-adapted model with its adapters off: the pre-trained base it was tuned from."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers = [m for m in model.modules() if isinstance(m, LoraLayer)]

    def __call__(self, *args, **kwargs):
        for layer in self.layers:
            layer.enable_adapters(False)
        try:
            return self.model(*args, **kwargs)
        finally:
            for layer in self.layers:
                layer.enable_adapters(True)

    def eval(self) -> WithoutAdapters:
        return self

    def train(self, mode: bool = True) -> WithoutAdapters:
        return self

    @property
    def training(self) -> bool:
        return self.model.training


class KeptBase:
    """What a run keeps to guide its validation grids with the base: nothing for LoRA (adapters off) and
    for families that hold their base anyway (ControlNet's UNet), else a host-memory copy of the denoiser
    taken before training changed it."""

    def __init__(self, family, module: nn.Module, config):
        """Call before ``module`` trains (LoRA: before or after its adapters are added)."""
        self.family, self.copy, self.lora = family, None, config.peft == "lora"
        self.enabled = config.guidance_mode == "domain"
        if self.enabled and family.pretrained_denoiser() is None and not self.lora:
            self.copy = host_copy(module).eval().requires_grad_(False)

    @contextmanager
    def beside(self, model: nn.Module, device) -> Iterator[object]:
        """The base to guide ``model`` with while sampling (on ``device``), or the family's own; None
        (classifier-free guidance) unless ``guidance_mode`` is domain."""
        if not self.enabled:
            yield None
        elif self.family.pretrained_denoiser() is not None:
            yield self.family.pretrained_denoiser()
        elif self.lora:
            yield WithoutAdapters(model)
        elif self.copy is None:
            raise RuntimeError("domain guidance: no base kept (guidance_mode was not domain when training started)")
        else:
            try:
                yield self.copy.to(device)
            finally:
                self.copy.to("cpu")


def load_guidance_base(checkpoint: Path, spec, base: Path | None, device: str):
    """The pre-trained model a checkpoint's samples take Domain Guidance's unconditional branch from:
    ``base``, else the ``base_model`` it was tuned from (its meta.json); None for a ControlNet (its own
    frozen UNet). ``ValueError`` naming the option when there is none to use."""
    from models.families import family_class

    if spec.name == "flux":
        raise ValueError("guidance-mode: flux is guidance-distilled (no unconditional branch), so Domain Guidance "
                         "does not apply")
    if spec.needs_controls:
        return None
    if base is None:
        try:
            base = Path(json.loads((Path(checkpoint) / "meta.json").read_text())["config"]["base_model"])
        except (OSError, ValueError, KeyError):
            raise ValueError(f"base: {checkpoint} records no base model; give --base for Domain Guidance") from None
    try:
        return family_class(spec.name).from_pretrained(str(base), device=device)
    except (ValueError, OSError) as err:
        raise ValueError(f"base: cannot load {base} for Domain Guidance: {err}") from None
