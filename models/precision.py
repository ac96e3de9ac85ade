"""Mixed precision, decided in one place for training and sampling."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def uses_bf16(device: str | torch.device, mixed_precision: str = "auto") -> bool:
    """Whether ``autocast`` computes in bf16: when asked for (``bf16``) or on CUDA by default (``auto``)."""
    return mixed_precision == "bf16" or (mixed_precision == "auto" and str(device).startswith("cuda"))


def autocast(device: str | torch.device, mixed_precision: str = "auto") -> AbstractContextManager:
    """bf16 autocast where :func:`uses_bf16` says so; fp32 otherwise."""
    if uses_bf16(device, mixed_precision):
        return torch.autocast(str(device).split(":")[0], dtype=torch.bfloat16)
    return nullcontext()
