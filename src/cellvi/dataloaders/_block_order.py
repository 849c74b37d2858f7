"""Block shuffling: the order in which an out-of-core loader reads a split's cells."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from cellvi._checks import check_positive_int


class BlockOrder:
    """One process's cells of an epoch, in windows read from the file one at a time.

    The cells (in file order when shuffling) are cut into blocks of ``block_size``
    consecutive cells; an epoch permutes the blocks, and the cells of each window (a run of
    ``window`` cells of that order, a whole number of minibatches) are shuffled among
    themselves. A minibatch therefore mixes cells from about ``window / block_size`` places
    in the file while each block is one contiguous read. With ``block_size=1`` the order is a
    plain permutation of the cells as given: the order the in-memory loader draws from the
    same generator.

    In a distributed run (``world > 1``) every rank permutes the blocks alike (a generator
    seeded by ``seed + epoch``, as ``torch.utils.data.DistributedSampler`` does) and takes
    every ``world``-th block from its ``rank``; each rank then reads ``ceil(n / world)``
    cells, repeating the epoch's first cells where its blocks hold fewer and leaving out its
    last ones where they hold more.

    Parameters
    ----------
    cells
        The cells to serve (positions in the registered data).
    block_size
        Consecutive cells read together.
    window
        Cells per window (shuffled together, read together).
    shuffle
        Draw a new order each epoch; otherwise the cells come as given.
    generator
        Source of the single-process orders (kept across epochs).
    rank, world, seed
        This process's rank, the number of processes and the seed of the distributed orders.
    """

    def __init__(
        self,
        cells: np.ndarray,
        block_size: int,
        window: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
    ) -> None:
        self.block_size = check_positive_int("block_size", block_size)
        self.window = check_positive_int("window", window)
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}.")
        sorts = shuffle and block_size > 1
        self.cells = np.sort(cells) if sorts else np.asarray(cells, dtype=np.int64)
        self.shuffle = shuffle
        self.generator = generator
        self.rank, self.world, self.seed = rank, world, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Which epoch comes next (distributed orders depend on it; Lightning calls this)."""
        self.epoch = epoch

    @property
    def n_cells(self) -> int:
        """Cells this process serves per epoch."""
        return -(-self.cells.size // self.world)

    def epoch_cells(self) -> np.ndarray:
        """This epoch's cells of this process, in the order served."""
        generator = self._generator()
        n_blocks = -(-self.cells.size // self.block_size)
        blocks = np.arange(n_blocks)
        if self.shuffle:
            blocks = torch.randperm(n_blocks, generator=generator).numpy()
        order = self._cells_of(blocks)
        if self.world > 1:
            mine = self._cells_of(blocks[self.rank :: self.world])
            # Every rank must serve as many cells: pad with the epoch's first cells, or cut.
            order = np.concatenate([mine, order[: max(self.n_cells - mine.size, 0)]])
            order = order[: self.n_cells]
        if self.shuffle and self.block_size > 1:
            keys = torch.rand(order.size, generator=generator).numpy()
            order = order[np.lexsort((keys, np.arange(order.size) // self.window))]
        return order

    def __iter__(self) -> Iterator[np.ndarray]:
        """The epoch's windows of cells."""
        order = self.epoch_cells()
        for start in range(0, order.size, self.window):
            yield order[start : start + self.window]

    def _generator(self) -> torch.Generator | None:
        if not self.shuffle:
            return None
        if self.world > 1 or self.generator is None:
            return torch.Generator().manual_seed(self.seed + self.epoch)
        return self.generator

    def _cells_of(self, blocks: np.ndarray) -> np.ndarray:
        """The cells of ``blocks`` (block numbers), block after block."""
        positions = (blocks[:, None] * self.block_size + np.arange(self.block_size)).ravel()
        return self.cells[positions[positions < self.cells.size]]
