"""``BatchDistributedSampler``: each replica's share of a dataset, in whole minibatches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Dataset, DistributedSampler

from cellvi._checks import check_positive_int


class BatchDistributedSampler(DistributedSampler):
    """Yield one replica's minibatches of dataset positions, one array per minibatch.

    Like :class:`torch.utils.data.DistributedSampler`, each of ``num_replicas`` processes
    reads its own share of the dataset (``rank``), reshuffled at every ``set_epoch`` when
    ``shuffle``; unlike it, the share comes in minibatches, so that a dataset is indexed once
    per minibatch.

    Parameters
    ----------
    dataset
        What to sample from; only its length is read.
    batch_size
        Positions per minibatch, for each replica (the effective minibatch across replicas is
        ``batch_size * num_replicas``).
    drop_last
        Leave out each replica's last, incomplete minibatch.
    drop_dataset_tail
        Shorten the dataset to a multiple of ``num_replicas`` (every replica then reads
        ``floor(n / num_replicas)`` positions) instead of repeating positions to lengthen it
        (``ceil(n / num_replicas)``).
    **kwargs
        :class:`~torch.utils.data.DistributedSampler`'s ``num_replicas``, ``rank``,
        ``shuffle`` and ``seed`` (replicas and rank default to the process group's).

    Attributes
    ----------
    drop_last
        Whether the dataset tail is dropped (``DistributedSampler``'s meaning of the name).
    drop_last_batch
        Whether each replica's last, incomplete minibatch is dropped.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 128,
        drop_last: bool = False,
        drop_dataset_tail: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, drop_last=drop_dataset_tail, **kwargs)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.drop_last_batch = drop_last

    def __len__(self) -> int:
        """Number of minibatches (not positions) this replica yields per epoch."""
        n_full, remainder = divmod(self.num_samples, self.batch_size)
        return n_full if self.drop_last_batch or remainder == 0 else n_full + 1

    def __iter__(self) -> Iterator[np.ndarray]:
        positions = np.fromiter(super().__iter__(), dtype=np.int64, count=self.num_samples)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield positions[start : start + self.batch_size]
