"""Checkpoints: a diffusers-format folder plus trainer state and ``meta.json``.

Layout of ``OUT/checkpoints/step_0001000/``::

    model_index.json, transformer/, vae/, scheduler/   EMA weights; ``*Pipeline.from_pretrained`` loads it
    trainer_state/state.safetensors                    raw weights, EMA, optimizer tensors
    trainer_state/state.json                           step, optimizer hyperparameters, data order
    trainer_state/rank{r}.safetensors                  RNG state of each DDP rank
    meta.json                                          config, step, metrics, family facts, code version

A checkpoint is written to a hidden temporary folder and renamed when complete, so a crash never
leaves a half checkpoint that resume would pick up. No pickles: tensors in safetensors, the rest JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

import models
from contract.outputs import step_name, step_of
from models.distributed import spans_hosts

STATE_DIR = "trainer_state"


def checkpoints_root(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_root(out_dir)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and step_of(p.name) is not None and (p / "meta.json").exists()]
    return sorted(done, key=lambda p: step_of(p.name))


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def staging_dir(out_dir: Path, step: int) -> Path:
    return checkpoints_root(out_dir) / f".{step_name(step)}.partial"


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{models.__version__}+{sha}" if sha else models.__version__


# ----------------------------------------------------------------------------------------------
# Optimizer state <-> flat tensors + JSON
# ----------------------------------------------------------------------------------------------


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into safetensors-ready tensors and a JSON part. Nested dicts in
    a parameter's state (bitsandbytes keeps its quantisation state in one) get ``/``-joined keys."""
    tensors, scalars, seen = {}, {}, set()

    def walk(prefix: str, entry: dict[str, Any]) -> None:
        for key, value in entry.items():
            name = f"{prefix}/{key}" if prefix.count(".") else f"{prefix}.{key}"
            if isinstance(value, dict):
                walk(name, value)
            elif torch.is_tensor(value):
                value = value.detach().cpu().contiguous()
                if value.untyped_storage().data_ptr() in seen:  # shared (bitsandbytes' quantile maps)
                    value = value.clone()
                seen.add(value.untyped_storage().data_ptr())
                tensors[f"optim.{name}"] = value
            else:
                scalars[name] = value

    for idx, entry in state["state"].items():
        walk(str(idx), entry)
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}

    def put(name: str, value: Any) -> None:
        idx, path = name.split(".", 1)
        *parents, leaf = path.split("/")
        entry = state.setdefault(int(idx), {})
        for parent in parents:
            entry = entry.setdefault(parent, {})
        entry[leaf] = value

    for name, value in tensors.items():
        if name.startswith("optim."):
            put(name[len("optim."):], value)
    for name, value in meta["scalars"].items():
        put(name, value)
    return {"state": state, "param_groups": meta["param_groups"]}


# ----------------------------------------------------------------------------------------------
# Writing and reading
# ----------------------------------------------------------------------------------------------


def write_rank_state(stage: Path, rank: int, tensors: dict[str, torch.Tensor]) -> None:
    """Each rank's own state (its random generators) as ``rank{r}.safetensors``.

    Across hosts (torchrun ``--nnodes`` > 1) only rank 0's host holds the checkpoint folder, so every
    rank calls this (a gather: all ranks reach it at the same point of ``save_checkpoint``) and rank 0
    writes every rank's file; on one host each rank writes its own."""
    if spans_hosts():
        gathered = [None] * dist.get_world_size() if rank == 0 else None
        dist.gather_object({k: v.detach().cpu() for k, v in tensors.items()}, gathered, dst=0)
        if rank == 0:
            for other, state in enumerate(gathered):
                _write_rank_file(stage, other, state)
        return
    _write_rank_file(stage, rank, tensors)


def _write_rank_file(stage: Path, rank: int, tensors: dict[str, torch.Tensor]) -> None:
    (stage / STATE_DIR).mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(stage / STATE_DIR / f"rank{rank}.safetensors"))


def write_trainer_state(stage: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    (stage / STATE_DIR).mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
              str(stage / STATE_DIR / "state.safetensors"))
    (stage / STATE_DIR / "state.json").write_text(json.dumps(state, indent=2))


def finalize_checkpoint(out_dir: Path, step: int, meta: dict[str, Any], keep: int) -> Path:
    """Write meta.json, atomically publish the staged folder, prune to the newest ``keep``."""
    stage = staging_dir(out_dir, step)
    meta = {"step": step, "code_version": code_version(), "created_at": time.time(), **meta}
    (stage / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    final = checkpoints_root(out_dir) / step_name(step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(stage, final)
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_trainer_state(checkpoint: Path, rank: int) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor]]:
    """(shared tensors, shared JSON state, this rank's tensors) of a checkpoint."""
    folder = Path(checkpoint) / STATE_DIR
    if not (folder / "state.json").exists():
        raise FileNotFoundError(f"{checkpoint} has no trainer state: it cannot be resumed")
    rank_file = folder / f"rank{rank}.safetensors"
    if not rank_file.exists():
        raise FileNotFoundError(f"{checkpoint} has no state for rank {rank}: resume with the same number of processes")
    return load_file(folder / "state.safetensors"), json.loads((folder / "state.json").read_text()), load_file(rank_file)


def read_meta(checkpoint: Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / "meta.json").read_text())
