"""A resumable, sharded sampler: the data order is a pure function of (seed, epoch), so it can restart mid-epoch.

``torch.utils.data.DistributedSampler`` shuffles with (seed + epoch) too, but it cannot start in the
middle of an epoch and it pads the dataset so every rank gets the same number of indices. This
sampler does both things a training loop needs:

* ``set_epoch(epoch, start=n)``: the epoch's order, skipping its first ``n`` samples (per rank), so a
  resumed run reads exactly the batches the interrupted run had not reached;
* it yields ``(index, augmentation seed)`` pairs: each sample's random augmentation is seeded from
  (seed, epoch, index), independent of worker processes and of anything that ran before.

For evaluation (``shuffle=False``) rank r reads indices r, r + K, r + 2K, ... with no padding, so
metrics summed over ranks are those of a single-process run.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class ShardedSampler(torch.utils.data.Sampler):
    def __init__(
        self,
        dataset_size: int,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        batch_size: int = 1,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas) = [0, {num_replicas}), got {rank}")
        self.dataset_size, self.num_replicas, self.rank = dataset_size, num_replicas, rank
        self.shuffle, self.seed, self.drop_last, self.batch_size = shuffle, seed, drop_last, batch_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Order of ``epoch``; skip the first ``start`` samples of this rank's share."""
        self.epoch, self.start = epoch, start

    def per_rank(self) -> int:
        """Samples each rank reads in a full epoch (a multiple of batch_size when ``drop_last``)."""
        if self.drop_last:
            per_rank = self.dataset_size // self.num_replicas
            return per_rank - per_rank % self.batch_size
        return len(range(self.rank, self.dataset_size, self.num_replicas))

    def indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.dataset_size, generator=generator).tolist()
        else:
            order = list(range(self.dataset_size))
        return order[self.rank :: self.num_replicas][: self.per_rank()]

    def augmentation_seed(self, index: int) -> int:
        return (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.indices()[self.start :]:
            yield index, self.augmentation_seed(index)

    def __len__(self) -> int:
        return max(self.per_rank() - self.start, 0)
