"""One mixed-precision rule for training and sampling: bf16 on CUDA by default, fp32 on CPU."""

from __future__ import annotations

import torch

from models.precision import autocast


def test_auto_is_full_precision_on_cpu():
    with autocast("cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_bf16_is_used_when_asked_for_even_on_cpu():
    with autocast("cpu", "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_no_turns_it_off():
    with autocast("cpu", "no"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
