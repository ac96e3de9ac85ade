"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for full fine-tuning of denoisers that do not fit one device.

Each rank holds a shard of the weights, gradients, optimizer state and EMA. Checkpoints hold full
tensors (gathered with ``torch.distributed.checkpoint.state_dict``, written by rank 0), so the
pipeline folder is an ordinary diffusers one and resume re-shards them onto the same number of ranks.
Every function here that gathers is a collective: all ranks call it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_denoiser(module: nn.Module) -> nn.Module:
    """Shard every block of the denoiser's block lists (``transformer_blocks``, ``down_blocks`` …), then
    the rest as one unit: a block's weights are gathered just for its own forward and backward. The
    first block of each list stays gathered from its forward to its backward (diffusers' DiT reads
    ``transformer_blocks[0].norm1.emb`` again after its loop): one block's memory per list."""
    for child in module.children():
        if isinstance(child, nn.ModuleList):
            for i, block in enumerate(child):
                fully_shard(block, reshard_after_forward=i > 0)
    fully_shard(module)
    return module


def plain_architecture(module: nn.Module) -> nn.Module:
    """An unsharded copy of ``module`` on the meta device (no memory): what exports are rebuilt into."""
    return copy.deepcopy(module).to("meta")


def gather(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Full CPU copies of (possibly sharded) tensors."""
    return [(t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu() for t in tensors]


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` split as the sharded ``like`` is (a plain tensor when ``like`` is one)."""
    if isinstance(like, DTensor):
        return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements)
    return full.to(like.device, like.dtype)


def full_model_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict on CPU (rank 0; other ranks get an empty dict)."""
    return get_model_state_dict(module, options=FULL)


def load_full_model_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True, strict=True))


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The full optimizer state keyed by parameter index, as ``optimizer.state_dict()`` is (rank 0)."""
    state = get_optimizer_state_dict(module, optimizer, options=FULL)
    if "param_groups" not in state:  # ranks other than 0 get nothing back
        return {"state": {}, "param_groups": []}
    order = [name for group in state["param_groups"] for name in group["params"]]
    index = {name: i for i, name in enumerate(order)}
    return {"state": {index[name]: entry for name, entry in state["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]}


def load_full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    names = [name for name, p in module.named_parameters() if p.requires_grad]
    full = {"state": {names[int(i)]: entry for i, entry in state["state"].items()},
            "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]]}
    set_optimizer_state_dict(module, optimizer, full, options=StateDictOptions(full_state_dict=True))


def rebuild(architecture: nn.Module, state: dict[str, torch.Tensor], sharded: nn.Module) -> nn.Module:
    """A plain module from the meta ``architecture`` and a full ``state``; buffers the state dict does
    not hold (non-persistent ones, never sharded) are copied from the ``sharded`` module."""
    model = copy.deepcopy(architecture)
    model.load_state_dict(state, assign=True)
    for name, buffer in sharded.named_buffers():
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        if getattr(owner, attr).is_meta:
            owner.register_buffer(attr, buffer.detach().cpu().clone(), persistent=False)
    return model
