"""``StreamingLoader``: minibatches of data on disk, read in windows by a background thread."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from cellvi._checks import check_positive_int
from cellvi._settings import settings
from cellvi.data import AnnDataManager, AnnTorchDataset
from cellvi.data._anntorchdataset import HostArray
from cellvi.data._indices import as_cell_indices
from cellvi.dataloaders._ann_dataloader import as_tensors
from cellvi.dataloaders._block_order import BlockOrder
from cellvi.dataloaders._generator import distributed_seed, order_generator
from cellvi.dataloaders._prefetch import prefetched


@dataclasses.dataclass(frozen=True)
class StreamingConfig:
    """How the out-of-core loader reads: block shuffling and the host buffer.

    Parameters
    ----------
    block_size
        Consecutive cells (in file order) read as one block; blocks are shuffled, cells within
        a window are shuffled among themselves (see :class:`BlockOrder`). 1 gives exactly
        the in-memory loader's order, at the cost of one read per cell.
    buffer_cells
        Cells per window (rounded down to whole minibatches, at least one): what is read and
        shuffled at once.
    prefetch
        Windows read ahead by the background thread; 0 reads in the training thread.

    Host memory holds at most ``prefetch + 2`` windows, as the file stores them (a sparse
    matrix stays sparse), plus one dense minibatch: it depends on these numbers, never on
    the number of cells.
    """

    block_size: int = 256
    buffer_cells: int = 8192
    prefetch: int = 2

    def __post_init__(self) -> None:
        check_positive_int("block_size", self.block_size)
        check_positive_int("buffer_cells", self.buffer_cells)
        if not isinstance(self.prefetch, int) or self.prefetch < 0:
            raise ValueError(f"prefetch must be an integer >= 0, got {self.prefetch!r}.")

    @classmethod
    def of(cls, value: StreamingConfig | Mapping[str, Any] | None) -> StreamingConfig:
        """A config from one, a mapping of its fields, or ``None`` (the defaults)."""
        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise TypeError(
                f"streaming must be a StreamingConfig, a mapping or None, got {type(value)}."
            )
        unknown = set(value) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(
                f"Unknown streaming options {sorted(unknown)}; valid: "
                f"{[field.name for field in dataclasses.fields(cls)]}."
            )
        return cls(**value)


class StreamingLoader:
    """Iterate minibatches of registered data that stay on disk (backed h5ad, zarr).

    A background thread reads the cells window by window (see :class:`StreamingConfig` and
    :class:`BlockOrder`) while the training thread consumes minibatches cut from the
    previous windows. Unshuffled, the cells come in the order given, so queries align their
    outputs with ``indices``; shuffled, each minibatch's rows are in ascending cell order,
    as the in-memory loader serves them.

    Parameters
    ----------
    adata_manager
        Manager holding the registered AnnData.
    indices
        Cells to serve; ``None`` serves all. The other arguments are keywords only.
    streaming
        Block size, buffer and prefetch depth (:class:`StreamingConfig`, a mapping, or
        ``None`` for the defaults).
    distributed
        Serve this process's share of the cells, with the rank and number of processes of
        the process group (each rank reads only its own blocks).
    batch_size
        Cells per minibatch (per process in a distributed run); ``None`` uses
        ``cellvi.settings.batch_size``.
    shuffle
        Draw a new block-shuffled order each epoch.
    drop_last
        Leave out the last, incomplete minibatch.
    data_and_attributes
        Registry keys to load (see :class:`AnnTorchDataset`).
    load_sparse_tensor
        Serve fields stored sparse as torch sparse tensors.
    """

    # Lightning reads a loader's samplers (to set their epoch, to check shuffling); minibatches
    # come whole from ``sampler``, never from a batch sampler.
    batch_sampler = None

    def __init__(
        self,
        adata_manager: AnnDataManager,
        indices: npt.ArrayLike | None = None,
        *,
        streaming: StreamingConfig | Mapping[str, Any] | None = None,
        distributed: bool = False,
        batch_size: int | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        data_and_attributes: Sequence[str] | Mapping[str, npt.DTypeLike] | None = None,
        load_sparse_tensor: bool = False,
    ) -> None:
        self.config = StreamingConfig.of(streaming)
        self.dataset = AnnTorchDataset(adata_manager, data_and_attributes, load_sparse_tensor)
        self.indices = as_cell_indices(indices, len(self.dataset))
        self.batch_size = check_positive_int(
            "batch_size", settings.batch_size if batch_size is None else batch_size
        )
        self.shuffle = shuffle
        self.drop_last = drop_last
        rank, world = _process_group() if distributed else (0, 1)
        # The window is a whole number of minibatches, so no minibatch spans two windows.
        window = max(self.config.buffer_cells // self.batch_size, 1) * self.batch_size
        self.sampler = BlockOrder(
            self.indices,
            self.config.block_size,
            window,
            shuffle,
            generator=order_generator() if shuffle and world == 1 else None,
            rank=rank,
            world=world,
            seed=distributed_seed(),
        )

    def __len__(self) -> int:
        n_full, remainder = divmod(self.sampler.n_cells, self.batch_size)
        return n_full if self.drop_last or remainder == 0 else n_full + 1

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        n_left = len(self)
        # torch's DataLoader draws its workers' base seed from its generator (the global one
        # without) at the start of each pass; drawing it too keeps blocks of one cell in
        # AnnDataLoader's order, and queries' sampling noise the same as in memory.
        torch.empty((), dtype=torch.int64).random_(generator=self.sampler.generator)
        windows = prefetched(map(self._read, self.sampler), self.config.prefetch)
        for cells, rows, stored in windows:
            for start in range(0, cells.size, self.batch_size):
                if n_left == 0:
                    return
                n_left -= 1
                yield self._minibatch(cells[start : start + self.batch_size], rows, stored)

    def _read(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, HostArray]]:
        """A window's cells, its distinct cells ascending, and their stored rows (one pass)."""
        rows = np.unique(window)
        return window, rows, self.dataset.stored_rows(rows)

    def _minibatch(
        self, cells: np.ndarray, rows: np.ndarray, stored: dict[str, HostArray]
    ) -> dict[str, torch.Tensor]:
        if self.shuffle:
            cells = np.sort(cells)
        positions = np.searchsorted(rows, cells)
        return as_tensors(
            self.dataset.served({key: value[positions] for key, value in stored.items()})
        )


def _process_group() -> tuple[int, int]:
    """This process's rank and the number of processes of the default process group."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        raise RuntimeError(
            "distributed=True needs an initialised process group (Lightning starts one for "
            "strategy='ddp')."
        )
    return torch.distributed.get_rank(), torch.distributed.get_world_size()
