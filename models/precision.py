"""Mixed precision, decided in one place for training and sampling."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def autocast(device: str | torch.device, mixed_precision: str = "auto") -> AbstractContextManager:
    """bf16 autocast when asked for (``bf16``) or on CUDA by default (``auto``); fp32 otherwise."""
    device = str(device)
    if mixed_precision == "bf16" or (mixed_precision == "auto" and device.startswith("cuda")):
        return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
    return nullcontext()
