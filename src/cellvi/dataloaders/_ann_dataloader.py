"""``AnnDataLoader``: minibatches of registered AnnData fields as dicts of tensors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Dataset

from cellvi._checks import check_keywords, keyword_names
from cellvi._settings import settings
from cellvi.data import AnnDataManager, AnnTorchDataset
from cellvi.data._indices import as_cell_indices
from cellvi.dataloaders._distributed_sampler import BatchDistributedSampler
from cellvi.dataloaders._generator import distributed_seed, order_generator
from cellvi.dataloaders._sampler import BatchIndexSampler

# DataLoader arguments AnnDataLoader sets itself: each minibatch is one dataset lookup.
_SET_BY_LOADER = {"self", "dataset", "batch_size", "shuffle", "drop_last", "batch_sampler"}


def check_data_loader_kwargs(
    data_loader_kwargs: dict[str, Any], what: str, named: set[str] = frozenset()
) -> None:
    """Refuse names :class:`torch.utils.data.DataLoader` would not take from AnnDataLoader.

    ``named`` are the caller's own parameters, listed among the valid names.
    """
    valid = (keyword_names(DataLoader.__init__) - _SET_BY_LOADER) | named
    check_keywords(data_loader_kwargs, valid, what)


def check_sampling_options(
    sampler: object = None,
    distributed_sampler: bool = False,
    drop_dataset_tail: bool = False,
    **batching: object,
) -> None:
    """Refuse sampling options that cannot all hold at once.

    ``batching`` holds the batching options given (``batch_size``, ``shuffle``,
    ``drop_last``); a user's ``sampler`` decides all three itself.
    """
    if sampler is not None and distributed_sampler:
        raise ValueError("Cannot specify both `sampler` and `distributed_sampler`.")
    if drop_dataset_tail and not distributed_sampler:
        raise ValueError(
            "drop_dataset_tail=True shortens the dataset to a multiple of the number of "
            "replicas, which only a distributed sampler has: pass distributed_sampler=True too."
        )
    if sampler is not None:
        given = [name for name, value in batching.items() if value]
        if given:
            raise ValueError(
                f"A sampler yields whole minibatches in its own order, so {', '.join(given)} "
                "cannot apply: drop them, or leave out the sampler."
            )


def as_tensors(batch: dict[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dataset's minibatch as tensors, sharing the arrays' memory (module-level so that
    worker processes can pickle it)."""
    return {
        key: torch.from_numpy(value) if isinstance(value, np.ndarray) else value
        for key, value in batch.items()
    }


def _as_ndarrays(batch: dict[str, np.ndarray | torch.Tensor]) -> dict[str, Any]:
    """The dataset's minibatch as it is: numpy arrays (torch sparse tensors stay tensors)."""
    return batch


class _Positions(Dataset):
    """A dataset read by positions in ``indices``, for samplers that yield such positions."""

    def __init__(self, dataset: AnnTorchDataset, indices: np.ndarray) -> None:
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions: npt.ArrayLike) -> dict[str, torch.Tensor]:
        return self.dataset[self.indices[np.asarray(positions, dtype=np.int64)]]


class AnnDataLoader(DataLoader):
    """Iterate over the registered fields of an AnnData in minibatches of cells.

    Each minibatch is one ``AnnTorchDataset[indices]`` call (no per-cell collation), its arrays
    made tensors: ``{registry_key: tensor}``. Without ``drop_last``, one pass covers every
    selected cell exactly once.

    Parameters
    ----------
    adata_manager
        Manager holding the registered AnnData.
    indices
        Cells to load: a boolean mask or integer positions; ``None`` loads every cell.
        Unshuffled minibatches follow this order.
    batch_size
        Cells per minibatch (per replica with ``distributed_sampler``); ``None`` uses
        ``cellvi.settings.batch_size``.
    shuffle
        Draw a new order at each epoch (reproducible under ``cellvi.settings.seed``, see
        :func:`order_generator`).
    sampler
        Replaces the default sampler: an iterable with a length whose items are whole
        minibatches, as arrays of positions in ``indices``. It decides the minibatches, so
        ``batch_size``, ``shuffle`` and ``drop_last`` are then errors.
    drop_last
        Leave out the last, incomplete minibatch.
    drop_dataset_tail
        With ``distributed_sampler``: shorten the cells to a multiple of the number of
        replicas instead of repeating some (see :class:`BatchDistributedSampler`).
    data_and_attributes
        Registry keys to load, or registry keys mapped to numpy dtypes (see
        :class:`AnnTorchDataset`); ``None`` loads every registered field.
    iter_ndarray
        Yield dense fields as numpy arrays instead of torch tensors.
    distributed_sampler
        Give each process of a distributed run its own share of the cells, through a
        :class:`BatchDistributedSampler` (its replicas and rank are the process group's).
    load_sparse_tensor
        Yield fields stored sparse as torch sparse tensors of the same layout (CSR or CSC).
    **data_loader_kwargs
        Passed to :class:`torch.utils.data.DataLoader` (``num_workers`` defaults to
        ``cellvi.settings.dl_num_workers``); a name it does not take is an error listing the
        valid ones.
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        indices: npt.ArrayLike | None = None,
        batch_size: int | None = None,
        shuffle: bool = False,
        sampler: Iterable[npt.ArrayLike] | None = None,
        drop_last: bool = False,
        drop_dataset_tail: bool = False,
        data_and_attributes: Sequence[str] | Mapping[str, npt.DTypeLike] | None = None,
        iter_ndarray: bool = False,
        distributed_sampler: bool = False,
        load_sparse_tensor: bool = False,
        **data_loader_kwargs: Any,
    ) -> None:
        if "batch_sampler" in data_loader_kwargs:
            raise TypeError(
                "AnnDataLoader batches through its sampler; pass sampler= (yielding arrays of "
                "positions) instead of batch_sampler=."
            )
        check_data_loader_kwargs(
            data_loader_kwargs,
            "AnnDataLoader",
            keyword_names(AnnDataLoader.__init__) - {"adata_manager"},
        )
        check_sampling_options(
            sampler,
            distributed_sampler,
            drop_dataset_tail,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
        )
        if iter_ndarray and "collate_fn" in data_loader_kwargs:
            raise ValueError("iter_ndarray=True sets the collate_fn; pass one or the other.")
        dataset = AnnTorchDataset(adata_manager, data_and_attributes, load_sparse_tensor)
        self.indices = as_cell_indices(indices, len(dataset))
        self.shuffle = shuffle
        self.load_sparse_tensor = load_sparse_tensor
        self.minibatch_size = settings.batch_size if batch_size is None else batch_size
        generator = data_loader_kwargs.pop("generator", None)
        if generator is None and shuffle:
            generator = order_generator()
        if distributed_sampler:
            sampler = BatchDistributedSampler(
                self.indices,
                batch_size=self.minibatch_size,
                drop_last=drop_last,
                drop_dataset_tail=drop_dataset_tail,
                shuffle=shuffle,
                seed=distributed_seed(),
            )
        if sampler is None:
            sampler = BatchIndexSampler(
                self.indices, self.minibatch_size, shuffle, drop_last, generator
            )
        else:
            dataset = _Positions(dataset, self.indices)
        data_loader_kwargs.setdefault("num_workers", settings.dl_num_workers)
        data_loader_kwargs.setdefault("collate_fn", _as_ndarrays if iter_ndarray else as_tensors)
        # batch_size=None turns off torch's own batching: each sampler item is a whole batch.
        super().__init__(
            dataset, sampler=sampler, batch_size=None, generator=generator, **data_loader_kwargs
        )
