"""DDP plumbing: read torchrun's environment, pick the backend, and small collective helpers.

Nothing happens on import; ``init_distributed`` is called by entry points (the CLI, the worker).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    local_world_size: int | None = None  # processes on this host (torchrun's LOCAL_WORLD_SIZE); all when None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def nodes(self) -> int:
        """Hosts the run spans (``torchrun --nnodes``): ranks are numbered host by host."""
        return self.world_size // (self.local_world_size or self.world_size)

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); NCCL on CUDA, else gloo.

    Works across hosts (``torchrun --nnodes N``): the device is this host's ``LOCAL_RANK``-th GPU and
    ``LOCAL_WORLD_SIZE`` says how many of the ranks share this host."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = device or default_device()
    if world <= 1:
        return DistInfo(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device, local_world_size=local_world)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_across_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Average a tensor over ranks (identity in a single process)."""
    if not info.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / info.world_size


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device(info))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def spans_hosts() -> bool:
    """Whether this process belongs to a process group that spans several hosts (torchrun ``--nnodes`` > 1)."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    world = dist.get_world_size()
    return int(os.environ.get("LOCAL_WORLD_SIZE", world)) < world


def _collective_device(info: DistInfo) -> str:
    return info.device if info.device.startswith("cuda") else "cpu"


def agree(values: list[int], info: DistInfo) -> tuple[list[int], list[int]]:
    """(minimum, maximum) of each of ``values`` over the ranks (a collective)."""
    low = torch.tensor(values, dtype=torch.int64, device=_collective_device(info))
    high = low.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return low.tolist(), high.tolist()


def shared_folder(path: Path, info: DistInfo) -> bool:
    """Whether every rank sees the same ``path`` (a shared file system, or one host); a collective
    on a multi-host run, which every rank must call. Rank 0 leaves a token file the others look for."""
    if not info.multi_node:
        return True
    path.mkdir(parents=True, exist_ok=True)
    token = [secrets.token_hex(8) if info.is_main else None]
    dist.broadcast_object_list(token, src=0)
    probe = path / f".shared-{token[0]}"
    if info.is_main:
        probe.touch()
    dist.barrier()
    low, _ = agree([int(probe.exists())], info)
    dist.barrier()
    if info.is_main:
        probe.unlink(missing_ok=True)
    return bool(low[0])


_node_groups: dict[int, object] = {}


def node_barrier(info: DistInfo) -> Callable[[], None]:
    """A barrier of this host's ranks only (its process group is made on first use, by every rank)."""
    if not info.multi_node:
        return lambda: barrier(info)
    size = info.local_world_size or info.world_size
    if size not in _node_groups:
        _node_groups[size], _ = dist.new_subgroups(group_size=size)
    group = _node_groups[size]
    return lambda: dist.barrier(group=group)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
        _node_groups.clear()
