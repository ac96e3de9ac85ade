"""How much memory a run needs, found by running one real training step of it (``difftune plan``).

The plan loads the base model, encodes the dataset (into the same cache the run will use), builds the
Trainer with the run's batch, resolution and memory savers, and takes one step while counting:
the weights by dtype and whether they train (a frozen base as ``base_precision`` holds it: fp8 at
one byte, nf4 at half a byte plus its quantisation statistics), the gradients, the optimizer state
(allocated by that step), the EMA, the frozen text encoders and VAE, and the activations the backward
pass keeps (every tensor autograd saves, counted once per storage). On CUDA the device's measured peak
is reported too; that is the figure to trust there, and what ``fits`` compares. Not counted: the knowledge-bank
generation and the validation samples, which run before and between steps without gradients.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contract.train_config import TrainConfig
from models.distributed import DistInfo
from models.families import load_family, scan_dataset
from models.memory_savers import quant_state_bytes

GB = 2**30


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per process of one training step, by part; ``peak`` is the device's measured peak (CUDA)."""

    parts: dict[str, int]
    batch_per_process: int
    device: str
    peak: int | None = None
    budget: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.peak if self.peak is not None else sum(self.parts.values())

    @property
    def fits(self) -> bool | None:
        return None if self.budget is None else self.total <= self.budget

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "batch_per_process": self.batch_per_process,
                "parts_gb": {k: round(v / GB, 3) for k, v in self.parts.items()},
                "accounted_gb": round(sum(self.parts.values()) / GB, 3),
                "measured_peak_gb": None if self.peak is None else round(self.peak / GB, 3),
                "budget_gb": None if self.budget is None else round(self.budget / GB, 3),
                "fits": self.fits, "notes": self.notes}


def does_not_fit(config: TrainConfig, plan: MemoryPlan | None, device: str) -> str:
    """Why one step of ``config`` does not fit (``plan`` None: it ran out of memory), with the settings to change."""
    from models.oom import suggestions

    needs = (f"one training step needs {plan.total / GB:.2f} GB of {plan.budget / GB:.2f} GB" if plan else
             f"one training step ran out of memory on {device}")
    return f"does not fit: {needs}; change one of: {'; '.join(suggestions(config, 'train'))}"


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class SavedTensors:
    """Counts the bytes autograd saves for the backward pass (each storage once)."""

    def __init__(self):
        self.storages: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def plan_memory(config: TrainConfig, data_dir: str | Path, *, device: str, cache_dir: str | Path,
                processes: int = 1, budget_gb: float | None = None) -> MemoryPlan:
    """Run one step of ``config`` on ``device`` with the batch one of ``processes`` processes gets."""
    from models.trainer import Trainer

    if config.batch_size % processes:
        raise ValueError(f"batch_size: {config.batch_size} is not divisible by {processes} processes")
    per_process = config.batch_size // processes
    # one process plays one rank: the batch it gets, all rows from the dataset (bank rows have their shape)
    step_config = config.model_copy(update={"batch_size": per_process, "method": "standard", "compile": False})
    folder = scan_dataset(step_config, data_dir)
    family = load_family(step_config, device=device)
    family.attach_dataset(folder, step_config)
    latents = family.prepare_target(folder, step_config, None, cache_dir=Path(cache_dir))
    cuda = device.startswith("cuda")
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(family, step_config, latents, None, out, dist=DistInfo(device=device))
        if sizes := getattr(latents, "sizes", None):  # aspect-ratio buckets: measure the one of most pixels
            trainer.target_order.skip_to(max(range(len(sizes)), key=lambda b: sizes[b][0] * sizes[b][1]))
        parts, peak = measure_step(trainer)
    notes = []
    if config.parallelism == "fsdp" and processes > 1:
        for name in ("weights_trained", "gradients", "optimizer", "ema"):
            parts[name] //= processes
        notes.append(f"fsdp: weights, gradients, optimizer state and EMA divided over {processes} processes "
                     "(plus one block gathered at a time, not counted)")
    if not cuda:
        notes.append("no CUDA device: parts are counted, not a measured peak (allocator overhead and "
                     "temporary buffers come on top)")
    budget = int(budget_gb * GB) if budget_gb else (torch.cuda.get_device_properties(device).total_memory
                                                    if cuda else None)
    return MemoryPlan(parts=parts, batch_per_process=per_process, device=device, peak=peak, budget=budget,
                      notes=notes)


def measure_step(trainer) -> tuple[dict[str, int], int | None]:
    """One ``trainer.train_step()``: the bytes of each part, and the device's peak on CUDA (else None)."""
    device = trainer.device
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    saved = SavedTensors()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        trainer.train_step()
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    return _parts(trainer, trainer.family, saved.total), peak


def _parts(trainer, family, activations: int) -> dict[str, int]:
    module: nn.Module = trainer.module
    trained = [p for p in module.parameters() if p.requires_grad]
    frozen = [p for p in module.parameters() if not p.requires_grad]
    optimizer = [v for state in trainer.optimizer.state.values() for v in _tensors(state)]
    ema = [s for s in trainer.ema.shadow if s.device == trained[0].device] if trained else []
    others = [m for name in ("vae", "base_denoiser") for m in [getattr(family, name, None)]
              if isinstance(m, nn.Module) and m is not module]
    text = list(getattr(family, "text_encoders", lambda: [])())
    on_device = [m for m in text if next(m.parameters()).device == next(module.parameters()).device]
    # the frozen base as held (base_precision): fp32 4, bf16 2, fp8 1 bytes per weight; nf4 its packed
    # 4-bit weights (0.5) plus their quantisation statistics, which are no parameters
    frozen_bytes = _bytes(frozen) + quant_state_bytes(module)
    return {"weights_trained": _bytes(trained), "weights_frozen": frozen_bytes, "gradients": _bytes(trained),
            "optimizer": _bytes(optimizer), "ema": _bytes(ema),
            "text_encoders": sum(_bytes(m.parameters()) for m in on_device),
            "vae_and_frozen_parts": sum(_bytes(m.parameters()) for m in others),
            "activations": activations}


def _tensors(state: dict) -> list[torch.Tensor]:
    out = []
    for value in state.values():
        if isinstance(value, dict):
            out.extend(_tensors(value))
        elif torch.is_tensor(value):
            out.append(value)
    return out
