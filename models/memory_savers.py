"""The memory savers a TrainConfig switches on: the optimizer (8-bit AdamW) and a bf16 frozen base.

The EMA's device is the EMA's own option (``models/ema.py``); gradient checkpointing is the
denoiser's (diffusers' ``enable_gradient_checkpointing``).
"""

from __future__ import annotations

import torch
from torch import nn

from contract.train_config import TrainConfig

BASE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def build_optimizer(params: list[nn.Parameter], config: TrainConfig, device: str) -> torch.optim.Optimizer:
    """AdamW over ``params`` as ``config.optimizer`` says (torch's, fused on CUDA, or bitsandbytes' 8-bit)."""
    options = dict(lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                   weight_decay=config.weight_decay)
    if config.optimizer == "adamw_8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as err:  # pragma: no cover - an install without the ml extra's bitsandbytes
            raise ValueError(f"optimizer: adamw_8bit needs bitsandbytes ({err})") from None
        return bnb.optim.AdamW8bit(params, **options)
    return torch.optim.AdamW(params, fused=device.startswith("cuda"), **options)


@torch.no_grad()
def hold_frozen_base(module: nn.Module, precision: str) -> None:
    """Cast the parameters that do not train to ``precision``."""
    dtype = BASE_DTYPES[precision]
    for param in module.parameters():
        if not param.requires_grad and param.dtype != dtype and param.is_floating_point():
            param.data = param.data.to(dtype)


def check_compute(config: TrainConfig, bf16_compute: bool) -> None:
    """A bf16 base needs bf16 autocast (fp32 inputs cannot meet bf16 weights)."""
    if config.base_precision != "fp32" and not bf16_compute:
        raise ValueError("base_precision: a bf16 base needs bf16 compute, which mixed_precision: auto only "
                         "uses on CUDA; set mixed_precision: bf16 to train it on this device")
