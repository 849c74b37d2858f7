"""``BatchIndexSampler``: yields whole minibatches of cell indices, one array per batch."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from cellvi._checks import check_positive_int


class BatchIndexSampler(Sampler[np.ndarray]):
    """Yield minibatches of cell indices, so a dataset is indexed once per minibatch.

    Parameters
    ----------
    indices
        Row positions to draw from (1-D integer array).
    batch_size
        Number of cells per minibatch (the last one may be smaller unless ``drop_last``).
    shuffle
        Draw a new permutation of ``indices`` at each epoch.
    drop_last
        Leave out the last, incomplete minibatch.
    generator
        Source of the permutations. ``None`` seeds each epoch from torch's global generator,
        as ``torch.utils.data.RandomSampler`` does, so ``torch.manual_seed`` still reproduces.
    """

    def __init__(
        self,
        indices: np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator

    def __len__(self) -> int:
        n_full, remainder = divmod(self.indices.size, self.batch_size)
        return n_full if self.drop_last or remainder == 0 else n_full + 1

    def __iter__(self) -> Iterator[np.ndarray]:
        indices = self.indices
        if self.shuffle:
            generator = self.generator
            if generator is None:
                seed = int(torch.empty((), dtype=torch.int64).random_().item())
                generator = torch.Generator().manual_seed(seed)
            indices = indices[torch.randperm(indices.size, generator=generator).numpy()]
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, indices.size), self.batch_size):
            batch = indices[start : start + self.batch_size]
            if self.shuffle:
                # Rows of a random batch have no meaningful order; ascending rows read CSR
                # (and on-disk) matrices contiguously. Unshuffled batches keep the caller's
                # order, which queries rely on to align outputs with their ``indices``.
                batch = np.sort(batch)
            yield batch
