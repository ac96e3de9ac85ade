"""The order in which a run reads its examples: shuffled epochs shared by all ranks, checkpointable."""

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
