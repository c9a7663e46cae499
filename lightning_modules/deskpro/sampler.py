"""Identity-balanced P x K batches (Hermans et al.), also under DDP.

Batch-hard triplet mining needs K images of each of P identities in every batch. Under DDP
each rank must hold whole identities too (a rank's triplet loss sees only its own batch), so
each global step deals P * world_size identities and rank r takes its own P of them.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class IdentityBatchSampler(Sampler[list[int]]):
    def __init__(self, pids: Sequence[int], identities_per_batch: int, images_per_identity: int, seed: int = 0):
        self.by_identity: dict[int, list[int]] = {}
        for index, pid in enumerate(pids):
            self.by_identity.setdefault(int(pid), []).append(index)
        self.identities = sorted(self.by_identity)
        self.p = identities_per_batch
        self.k = images_per_identity
        self.seed = seed
        self.epoch = 0
        if len(self.identities) < self.p:
            raise ValueError(f"{len(self.identities)} training identities, fewer than the {self.p} "
                             "identities per batch")

    def set_epoch(self, epoch: int) -> None:
        # Lightning calls this at every epoch start: each epoch deals identities afresh.
        self.epoch = epoch

    def __len__(self) -> int:
        _, world = _rank_and_world()
        return max(1, len(self.identities) // (self.p * world))

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = _rank_and_world()
        rng = np.random.default_rng((self.seed, self.epoch))  # the same on every rank
        order = [self.identities[i] for i in rng.permutation(len(self.identities))]
        for b in range(len(self)):
            start = (b * world + rank) * self.p
            chosen = order[start:start + self.p]
            if len(chosen) < self.p:  # fewer identities than one global batch: wrap around
                chosen += order[:self.p - len(chosen)]
            batch = []
            for pid in chosen:
                pool = self.by_identity[pid]
                picks = rng.choice(len(pool), size=self.k, replace=len(pool) < self.k)
                batch.extend(pool[i] for i in picks)
            yield batch
