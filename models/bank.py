"""The knowledge bank: images sampled from the pre-trained model before tuning.

Generated in shards of ``bank.batch_size`` images, each shard from its own seeded generator, so an
interrupted build resumes where it stopped and yields the same bank as an uninterrupted one.
Banks are cached under a key of (base model fingerprint, sampler settings, size, seed), so every
job on the same base model reuses the first one's bank. Under DDP the ranks build disjoint shards. A run with aspect-ratio buckets samples one bank per bucket size
(``BucketedBank``), so every batch's bank rows have the shape of its target rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from contract.buckets import Size
from contract.train_config import BankConfig, TrainConfig
from models.families.base import Family


@dataclass
class KnowledgeBank:
    """Latents sampled from the base model (M, C, h, w) and the conditions they were drawn with."""

    latents: torch.Tensor
    conditions: torch.Tensor

    def __len__(self) -> int:
        return self.latents.shape[0]

    def bucket(self, b: int) -> KnowledgeBank:
        """The bank of bucket ``b`` (a bank without buckets is its own only bucket)."""
        return self


@dataclass
class BucketedBank:
    """A bank sampled across the target's aspect-ratio buckets: one ``KnowledgeBank`` per bucket size,
    its share of the images in proportion to the target's images there (at least one)."""

    sizes: list[Size]  # (H, W) pixels, in the target's bucket order
    parts: list[KnowledgeBank]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def bucket(self, b: int) -> KnowledgeBank:
        return self.parts[b]


def bank_shares(total: int, counts: list[int]) -> list[int]:
    """``total`` split in proportion to ``counts`` (largest remainders), at least one each."""
    exact = [total * c / sum(counts) for c in counts]
    shares = [max(1, int(x)) for x in exact]
    by_remainder = sorted(range(len(counts)), key=lambda i: int(exact[i]) - exact[i])
    for i in by_remainder[: max(0, total - sum(shares))]:
        shares[i] += 1
    return shares


def bank_key(family: Family, bank: BankConfig, bucket: Size | None = None, count: int | None = None) -> str:
    """Cache key: base model identity and everything that changes the bank's content."""
    fields: dict = {"bucket": list(bucket), "count": count} if bucket else {}
    fields |= {
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


def _shard_generator(seed: int, shard: int, bucket: Size | None = None) -> torch.Generator:
    salt = bucket[0] * 100_003 + bucket[1] if bucket else 0  # each bucket's shards draw their own noise
    return torch.Generator().manual_seed((seed * 1_000_003 + shard + salt * 7_919) % (2**63))


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
    bucket: Size | None = None,
    count: int | None = None,
) -> KnowledgeBank:
    """Load the cached bank for this base model and settings, generating missing shards first; with
    ``bucket``, ``count`` images at that (H, W) size (one bucket of a ``BucketedBank``)."""
    bank = config.bank
    size = count or bank.size
    folder = Path(cache_dir) / "banks" / bank_key(family, bank, bucket, count)
    final = folder / "bank.safetensors"
    if not final.exists():
        folder.mkdir(parents=True, exist_ok=True)
        num_shards = -(-size // bank.batch_size)
        done = 0
        for shard in range(num_shards):
            n = min(bank.batch_size, size - shard * bank.batch_size)
            path = folder / f"shard_{shard:05d}.safetensors"
            if shard % world_size == rank and not path.exists():
                generator = _shard_generator(bank.seed, shard, bucket)
                latents, conds = family.generate_bank_batch(n, config, generator, size=bucket)
                _save_atomic({"latents": latents.float(), "conditions": conds}, path)
            done += n
            if progress:
                progress(done, size)
        barrier()
        if rank == 0 and not final.exists():
            shards = [load_file(folder / f"shard_{i:05d}.safetensors") for i in range(num_shards)]
            merged = {k: torch.cat([s[k] for s in shards]) for k in ("latents", "conditions")}
            _save_atomic(merged, final)
            (folder / "meta.json").write_text(json.dumps(
                {"family": family.name, "base_fingerprint": family.base_fingerprint,
                 **bank.model_dump(mode="json"), "bucket": bucket, "count": count}, indent=2))
            for i in range(num_shards):
                (folder / f"shard_{i:05d}.safetensors").unlink(missing_ok=True)
        barrier()
    data = load_file(final)
    return KnowledgeBank(latents=data["latents"], conditions=data["conditions"])


def build_bucketed_bank(family: Family, config: TrainConfig, cache_dir: Path, sizes: list[Size],
                        counts: list[int], *, progress: Callable[[int, int], None] | None = None,
                        **ranks) -> BucketedBank:
    """One bank per bucket (``sizes``, with the target's image ``counts``), ``bank.size`` images in all."""
    shares, parts, before = bank_shares(config.bank.size, counts), [], 0
    for size, share in zip(sizes, shares, strict=True):
        report = (lambda d, t, b=before: progress(b + d, sum(shares))) if progress else None
        parts.append(build_bank(family, config, cache_dir, bucket=size, count=share, progress=report, **ranks))
        before += share
    return BucketedBank(sizes=list(sizes), parts=parts)


def bank_for(family: Family, config: TrainConfig, cache_dir: Path, dataset, **ranks) -> KnowledgeBank | BucketedBank:
    """The run's bank: across the dataset's aspect-ratio buckets when it has them (``sizes``), else one."""
    if not getattr(dataset, "sizes", None):
        return build_bank(family, config, cache_dir, **ranks)
    counts = Counter(dataset.sizes)
    sizes = sorted(counts)
    return build_bucketed_bank(family, config, cache_dir, sizes, [counts[s] for s in sizes], **ranks)


def clear_bank(family: Family, bank: BankConfig, cache_dir: Path) -> None:
    """Remove a cached bank (used when its settings change and disk must be reclaimed)."""
    shutil.rmtree(Path(cache_dir) / "banks" / bank_key(family, bank), ignore_errors=True)
