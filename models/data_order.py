"""The order in which a run reads its examples: shuffled epochs shared by all ranks (one aspect-ratio
bucket per batch when the run has buckets), checkpointable."""

from __future__ import annotations

import torch

from models.distributed import DistInfo


class EpochSampler:
    """Shuffled epochs shared by all ranks; each global batch is split between the ranks.

    The permutation of epoch e depends only on (seed, e), so the state is two integers.
    """

    def __init__(self, size: int, seed: int, info: DistInfo):
        if size <= 0:
            raise ValueError("cannot sample batches from an empty set")
        self.size, self.seed, self.info = size, seed, info
        self.epoch, self.position = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        return torch.randperm(self.size, generator=gen)

    def next(self, per_rank: int) -> torch.Tensor:
        """Indices of this rank's share of the next global batch."""
        wanted, chunks = per_rank * self.info.world_size, []
        while wanted > 0:
            take = min(wanted, self.size - self.position)
            chunks.append(self._perm[self.position : self.position + take])
            self.position += take
            wanted -= take
            if self.position == self.size:
                self.epoch, self.position = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
        batch = torch.cat(chunks)  # (per_rank * world,)
        return batch[self.info.rank * per_rank : (self.info.rank + 1) * per_rank]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._perm = self._permutation(self.epoch)


class BucketSampler:
    """Shuffled epochs in which every global batch comes from one aspect-ratio bucket.

    Epoch e shuffles each bucket's rows, cuts them into global batches (the last one of a bucket filled
    up from the start of that bucket's shuffle, so every batch is full) and shuffles the batches, all
    from (seed, e) alone: the state is two integers, as for ``EpochSampler``.
    """

    def __init__(self, groups: list[torch.Tensor], seed: int, info: DistInfo, per_rank: int):
        if not groups or any(len(g) == 0 for g in groups):
            raise ValueError("cannot sample batches from an empty bucket")
        self.groups, self.seed, self.info = groups, seed, info
        self.global_batch = per_rank * info.world_size
        self.epoch, self.position = 0, 0
        self._batches = self._epoch_batches(0)

    def _epoch_batches(self, epoch: int) -> list[tuple[int, torch.Tensor]]:
        """(bucket, global batch of dataset rows) in the order epoch ``epoch`` visits them."""
        batches = []
        for b, rows in enumerate(self.groups):
            gen = torch.Generator().manual_seed((self.seed * 7919 + epoch) * 1009 + b)
            perm = rows[torch.randperm(len(rows), generator=gen)]
            count = -(-len(perm) // self.global_batch)
            cycled = perm.repeat(-(-count * self.global_batch // len(perm)))  # wraps small buckets
            batches += [(b, cycled[i * self.global_batch : (i + 1) * self.global_batch]) for i in range(count)]
        order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        return [batches[i] for i in order.tolist()]

    def next(self, per_rank: int) -> torch.Tensor:
        """Indices of this rank's share of the next global batch; ``bucket`` says which bucket it is from."""
        if per_rank * self.info.world_size != self.global_batch:
            raise ValueError(f"batches of {self.global_batch} rows were planned, not {per_rank * self.info.world_size}")
        self.bucket, batch = self._batches[self.position]
        self.position += 1
        if self.position == len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self._epoch_batches(self.epoch)
        return batch[self.info.rank * per_rank : (self.info.rank + 1) * per_rank]

    def skip_to(self, bucket: int) -> None:
        """Make the next batch this epoch's first from ``bucket`` (the memory plan measures the largest)."""
        self.position = next(i for i, (b, _) in enumerate(self._batches) if b == bucket)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = self._epoch_batches(self.epoch)


def data_order(target, seed: int, info: DistInfo, per_rank: int) -> EpochSampler | BucketSampler:
    """The target's order: by bucket for a set in aspect-ratio buckets (``rows`` per bucket), else epochs."""
    groups = getattr(target, "rows", None)
    return BucketSampler(groups, seed, info, per_rank) if groups else EpochSampler(len(target), seed, info)
