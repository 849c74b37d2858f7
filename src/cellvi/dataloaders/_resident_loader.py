"""``ResidentLoader``: minibatches of device-resident data, indices drawn on the device."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from cellvi.dataloaders._distributed_sampler import BatchDistributedSampler
from cellvi.dataloaders._generator import distributed_seed, order_generator
from cellvi.dataloaders._resident import ResidentTensors


class ResidentLoader:
    """Iterate minibatches of a subset of cells without host copies or worker processes.

    Parameters
    ----------
    tensors
        The device-resident fields.
    indices
        Cells to serve (positions in the registered AnnData).
    batch_size
        Cells per minibatch.
    shuffle
        Draw a new order every epoch, on the device (see :func:`order_generator`).
    drop_last
        Skip the last, incomplete minibatch.
    distributed
        Serve this process's share of the cells, through a :class:`BatchDistributedSampler`
        (``sampler``, whose epoch Lightning sets); every process holds the whole data.
    """

    # Lightning reads a loader's samplers (to set their epoch, to check shuffling); minibatches
    # come whole from ``sampler``, never from a batch sampler.
    batch_sampler = None

    def __init__(
        self,
        tensors: ResidentTensors,
        indices: np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        distributed: bool = False,
    ) -> None:
        self.tensors = tensors
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=tensors.device)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = order_generator(tensors.device) if shuffle and not distributed else None
        self.sampler = None
        if distributed:
            self.sampler = BatchDistributedSampler(
                self.indices, self.batch_size, drop_last, shuffle=shuffle, seed=distributed_seed()
            )

    def __len__(self) -> int:
        if self.sampler is not None:
            return len(self.sampler)
        n_cells = len(self.indices)
        return n_cells // self.batch_size if self.drop_last else -(-n_cells // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.sampler is not None:
            for positions in self.sampler:
                rows = torch.as_tensor(positions, device=self.indices.device)
                yield self.tensors.take(self.indices[rows])
            return
        order = self.indices
        if self.shuffle:
            permutation = torch.randperm(len(order), device=order.device, generator=self.generator)
            order = order[permutation]
        for batch in range(len(self)):
            yield self.tensors.take(order[batch * self.batch_size : (batch + 1) * self.batch_size])
