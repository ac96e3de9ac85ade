"""Encoded prompts by id: what text-to-image families condition on, computed once per run.

A table holds named tensors with the prompts along dim 0: ``embeds`` (P, L, D) for every text
family, ``pooled`` (P, D) where the pipeline pools (SDXL, SD3, Flux). Row 0 is the empty prompt.
Tables of large encoders are big (a T5-XXL row is L × 4096 values: 256 tokens in bf16 ≈ 2 MiB per
prompt), so a cached table stays on disk and rows are read per batch; only small tables sit in memory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

Encoded = dict[str, torch.Tensor]  # name -> (P, ...) tensor


class PromptTable:
    """Rows of encoded prompts, in memory or read from a safetensors file."""

    def __init__(self, tensors: Encoded | None = None, *, path: Path | None = None):
        if (tensors is None) == (path is None):
            raise ValueError("a prompt table is either in memory or on disk")
        self.tensors, self.path = tensors, path
        self._file = safe_open(str(path), framework="pt") if path is not None else None
        names = list(self._file.keys()) if self._file is not None else list(tensors)
        self.names = sorted(names)
        first = self._file.get_slice(self.names[0]).get_shape()[0] if self._file else len(tensors[self.names[0]])
        self.size = int(first)

    def __len__(self) -> int:
        return self.size

    def rows(self, ids: torch.Tensor, device: torch.device | str = "cpu") -> Encoded:
        """The tensors of prompts ``ids`` (N,), stacked along dim 0, on ``device``."""
        ids = ids.cpu().long()
        if self.tensors is not None:
            return {k: v[ids].to(device, non_blocking=True) for k, v in self.tensors.items()}
        unique, inverse = torch.unique(ids, return_inverse=True)
        out = {}
        for name in self.names:
            view = self._file.get_slice(name)
            rows = torch.cat([view[i : i + 1] for i in unique.tolist()])  # (U, ...)
            out[name] = rows[inverse].to(device, non_blocking=True)
        return out

    def nbytes(self) -> int:
        """Bytes of the whole table (on disk when cached)."""
        if self.path is not None:
            return self.path.stat().st_size
        return sum(v.numel() * v.element_size() for v in self.tensors.values())


def table_key(encoder_fingerprint: str, prompts: list[str]) -> str:
    h = hashlib.sha256(encoder_fingerprint.encode())
    for p in prompts:
        h.update(p.encode() + b"\0")
    return h.hexdigest()[:32]


def cached_table(encode: Callable[[list[str]], Encoded], prompts: list[str], encoder_fingerprint: str,
                 cache_dir: Path | None, *, batch_size: int = 64) -> PromptTable:
    """``encode`` every prompt once, through an on-disk cache keyed by the encoders and prompts.
    Without a cache directory the table is built in memory."""
    chunks = (encode(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size))
    if cache_dir is None:
        parts = list(chunks)
        return PromptTable({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
    path = Path(cache_dir) / "text" / f"{table_key(encoder_fingerprint, prompts)}.safetensors"
    if not path.exists():
        parts = list(chunks)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({k: torch.cat([p[k] for p in parts]).contiguous() for k in parts[0]}, str(tmp))
        os.replace(tmp, path)
    return PromptTable(path=path)
