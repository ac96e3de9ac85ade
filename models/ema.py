"""Exponential moving average of the trainable weights, updated with foreach ops."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def host_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in host memory, made without a second copy on its device."""
    memo: dict[int, object] = {}  # deepcopy takes these host copies for the module's tensors
    for t in [*module.parameters(), *module.buffers()]:
        host = t.detach().to("cpu", copy=True)
        memo[id(t)] = nn.Parameter(host, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else host
    return copy.deepcopy(module, memo)


class EMA:
    """fp32 shadow copies of the named trainable parameters of a module.

    ``warmup`` uses decay min(d, (1+n)/(10+n)) at update n, so short runs get useful averages; the
    Diff-Tuning reference is a constant 0.9999 (warmup off). ``device`` (e.g. ``"cpu"``) keeps the
    shadow off the model's device: each update then copies the weights over first.
    """

    def __init__(self, module: nn.Module, decay: float, *, warmup: bool = False, device: str | None = None):
        self.decay = decay
        self.warmup = warmup
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        self.shadow = [p.detach().to(device or p.device, torch.float32, copy=True) for p in self._params(module)]
        self.num_updates = 0

    def _params(self, module: nn.Module) -> list[torch.Tensor]:
        named = dict(module.named_parameters())
        return [named[n] for n in self.names]

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """shadow ← decay·shadow + (1−decay)·param, for every tracked parameter at once."""
        device = self.shadow[0].device if self.shadow else None
        params = [p.detach().to(device, torch.float32) for p in self._params(module)]
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.current_decay())
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Write the averaged weights into ``module`` (a copy of the trained one)."""
        for param, avg in zip(self._params(module), self.shadow, strict=True):
            param.copy_(avg.to(param.dtype))

    @contextmanager
    def swapped_in(self, module: nn.Module) -> Iterator[nn.Module]:
        """``module`` carrying the averaged weights inside the block, its own weights back after: no copy
        of the model on its device (the trained weights wait in host memory)."""
        params = self._params(module)
        with torch.no_grad():
            saved = [p.detach().to("cpu", copy=True) for p in params]
            self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for param, value in zip(params, saved, strict=True):
                    param.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow, strict=True))

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        missing = [n for n in self.names if n not in state]
        if missing:
            raise KeyError(f"EMA state lacks {missing[:3]}")
        self.shadow = [state[n].to(s.device, torch.float32).clone() for n, s in zip(self.names, self.shadow, strict=True)]
        self.num_updates = num_updates
