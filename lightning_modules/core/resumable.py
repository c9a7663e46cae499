"""Training data that resumes exactly where a checkpoint left it.

A run killed mid-epoch and resumed must see the same batches as a run never stopped. Two
things make that hold:

- the order of an epoch is a pure function of (seed, epoch), never of a generator's history
  (`EpochPermutation`, or any batch sampler with `set_epoch`, such as the P x K sampler);
- the loader is one Lightning can checkpoint (`ResumableLoader`, which has `state_dict`):
  it records the epoch and how many of its batches were trained, and the resumed run skips
  those batches by index, without loading them.

Both sample per rank themselves, so they are used with `use_distributed_sampler=False`.
Per-epoch draws of the dataset (flips, caption dropout) follow through `epoch_listeners`,
also on resume, where Lightning does not call `on_train_epoch_start`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochPermutation(Sampler[int]):
    """This rank's share of a dataset's indices for one epoch, shuffled by (seed, epoch)."""

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        _, world = rank_and_world()
        return -(-self.size // world)

    def __iter__(self) -> Iterator[int]:
        rank, world = rank_and_world()
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        total = len(self) * world
        order += order[:total - len(order)]  # every rank the same number of items
        return iter(order[rank:total:world])


class ResumableBatches(Sampler[list[int]]):
    """The batches of an epoch, able to start after the first `n` of them."""

    def __init__(self, batches: Sampler[list[int]], epoch_listeners: Sequence[Callable[[int], None]] = ()):
        self.batches = batches
        self.epoch_listeners = list(epoch_listeners)
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        inner = getattr(self.batches, "sampler", self.batches)  # a BatchSampler's, or the batch sampler itself
        for target in {id(self.batches): self.batches, id(inner): inner}.values():
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)
        for listener in self.epoch_listeners:
            listener(epoch)

    @property
    def sampler(self) -> "ResumableBatches":
        # Lightning calls `set_epoch` at each epoch start on `loader.sampler` and on
        # `loader.batch_sampler.sampler`, never on the batch sampler itself: this is how it reaches it.
        return self

    def skip_next(self, count: int) -> None:
        """The next iteration starts at batch `count` (those before it were trained)."""
        self._skip = count

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        for index, batch in enumerate(self.batches):
            if index >= skip:
                yield batch


class ResumableLoader(DataLoader):
    """A DataLoader whose place in the epoch is part of the Lightning checkpoint.

    `trained_batches` tells how many batches of the current epoch the training loop has
    finished; the trainer binds it (tasks/core/trainer.py). It is not counted here because
    Lightning fetches a batch ahead of the one it trains.
    """

    def __init__(self, dataset: Dataset, batch_sampler: ResumableBatches, **kwargs: Any):
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self.trained_batches: Optional[Callable[[], int]] = None
        self.restored_from: Optional[dict[str, int]] = None

    def state_dict(self) -> dict[str, int]:
        sampler: ResumableBatches = self.batch_sampler
        return {"epoch": sampler.epoch, "trained_batches": self.trained_batches() if self.trained_batches else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: ResumableBatches = self.batch_sampler
        sampler.set_epoch(int(state["epoch"]))
        sampler.skip_next(int(state["trained_batches"]))
        self.restored_from = dict(state)


def shuffled_loader(dataset: Dataset, batch_size: int, *, seed: int, drop_last: bool = False, num_workers: int = 0,
                    shuffle: bool = True, epoch_listeners: Sequence[Callable[[int], None]] = (),
                    **kwargs: Any) -> ResumableLoader:
    """The usual shuffled training loader, resumable mid-epoch and split across DDP ranks."""
    if epoch_listeners and kwargs.get("persistent_workers"):
        raise ValueError("persistent workers would keep the dataset's first epoch; per-epoch draws need fresh ones")
    batches = BatchSampler(EpochPermutation(len(dataset), seed, shuffle), batch_size, drop_last)
    return ResumableLoader(dataset, ResumableBatches(batches, epoch_listeners), num_workers=num_workers, **kwargs)
