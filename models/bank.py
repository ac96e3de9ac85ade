"""The knowledge bank: images sampled from the pre-trained model before tuning.

Generated in shards of ``bank.batch_size`` images, each shard from its own seeded generator, so an
interrupted build resumes where it stopped and yields the same bank as an uninterrupted one.
Banks are cached under a key of (base model fingerprint, sampler settings, size, seed), so every
job on the same base model reuses the first one's bank. Under DDP the ranks build disjoint shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from contract.train_config import BankConfig, TrainConfig
from models.families.base import Family


@dataclass
class KnowledgeBank:
    """Latents sampled from the base model (M, C, h, w) and the conditions they were drawn with."""

    latents: torch.Tensor
    conditions: torch.Tensor

    def __len__(self) -> int:
        return self.latents.shape[0]


def bank_key(family: Family, bank: BankConfig) -> str:
    """Cache key: base model identity and everything that changes the bank's content."""
    fields = {
        "family": family.name,
        "base": family.base_fingerprint,
        "size": bank.size,
        "sampler": bank.sampler,
        "steps": bank.num_inference_steps,
        "guidance": bank.guidance_scale,
        "batch": bank.batch_size,
        "seed": bank.seed,
        **family.bank_key_fields(),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def _shard_generator(seed: int, shard: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + shard) % (2**63))


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def build_bank(
    family: Family,
    config: TrainConfig,
    cache_dir: Path,
    *,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    progress: Callable[[int, int], None] | None = None,
) -> KnowledgeBank:
    """Load the cached bank for this base model and settings, generating missing shards first."""
    bank = config.bank
    folder = Path(cache_dir) / "banks" / bank_key(family, bank)
    final = folder / "bank.safetensors"
    if not final.exists():
        folder.mkdir(parents=True, exist_ok=True)
        num_shards = -(-bank.size // bank.batch_size)
        done = 0
        for shard in range(num_shards):
            n = min(bank.batch_size, bank.size - shard * bank.batch_size)
            path = folder / f"shard_{shard:05d}.safetensors"
            if shard % world_size == rank and not path.exists():
                latents, conds = family.generate_bank_batch(n, config, _shard_generator(bank.seed, shard))
                _save_atomic({"latents": latents.float(), "conditions": conds}, path)
            done += n
            if progress:
                progress(done, bank.size)
        barrier()
        if rank == 0 and not final.exists():
            shards = [load_file(folder / f"shard_{i:05d}.safetensors") for i in range(num_shards)]
            merged = {k: torch.cat([s[k] for s in shards]) for k in ("latents", "conditions")}
            _save_atomic(merged, final)
            (folder / "meta.json").write_text(json.dumps(
                {"family": family.name, "base_fingerprint": family.base_fingerprint,
                 **bank.model_dump(mode="json")}, indent=2))
            for i in range(num_shards):
                (folder / f"shard_{i:05d}.safetensors").unlink(missing_ok=True)
        barrier()
    data = load_file(final)
    return KnowledgeBank(latents=data["latents"], conditions=data["conditions"])


def clear_bank(family: Family, bank: BankConfig, cache_dir: Path) -> None:
    """Remove a cached bank (used when its settings change and disk must be reclaimed)."""
    shutil.rmtree(Path(cache_dir) / "banks" / bank_key(family, bank), ignore_errors=True)
