"""``AnnDataLoader``: minibatches of registered AnnData fields as dicts of tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader

from cellvi._checks import check_keywords, keyword_names
from cellvi._settings import settings
from cellvi.data import AnnDataManager, AnnTorchDataset
from cellvi.data._indices import as_cell_indices
from cellvi.dataloaders._generator import order_generator
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


def _as_tensors(batch: dict[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dataset's minibatch as tensors, sharing the arrays' memory (module-level so that
    worker processes can pickle it)."""
    return {
        key: torch.from_numpy(value) if isinstance(value, np.ndarray) else value
        for key, value in batch.items()
    }


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
        Cells per minibatch; ``None`` uses ``cellvi.settings.batch_size``.
    shuffle
        Draw a new order at each epoch (reproducible under ``cellvi.settings.seed``, see
        :func:`order_generator`).
    drop_last
        Leave out the last, incomplete minibatch.
    data_and_attributes
        Registry keys to load, or registry keys mapped to numpy dtypes (see
        :class:`AnnTorchDataset`); ``None`` loads every registered field.
    load_sparse_tensor
        Yield fields stored sparse (e.g. a CSR ``X``) as torch sparse CSR tensors.
    **data_loader_kwargs
        Passed to :class:`torch.utils.data.DataLoader` (``num_workers`` defaults to
        ``cellvi.settings.dl_num_workers``); a name it does not take is an error listing the
        valid ones. ``sampler`` may replace the default sampler; it must yield whole
        minibatches of indices.
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        indices: npt.ArrayLike | None = None,
        batch_size: int | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        data_and_attributes: Sequence[str] | Mapping[str, npt.DTypeLike] | None = None,
        load_sparse_tensor: bool = False,
        **data_loader_kwargs: Any,
    ) -> None:
        if "batch_sampler" in data_loader_kwargs:
            raise TypeError(
                "AnnDataLoader batches through its sampler; pass sampler= (yielding index "
                "arrays) instead of batch_sampler=."
            )
        check_data_loader_kwargs(
            data_loader_kwargs,
            "AnnDataLoader",
            keyword_names(AnnDataLoader.__init__) - {"adata_manager"},
        )
        dataset = AnnTorchDataset(adata_manager, data_and_attributes, load_sparse_tensor)
        self.indices = as_cell_indices(indices, len(dataset))
        self.shuffle = shuffle
        self.load_sparse_tensor = load_sparse_tensor
        self.minibatch_size = settings.batch_size if batch_size is None else batch_size
        generator = data_loader_kwargs.pop("generator", None)
        if generator is None and shuffle:
            generator = order_generator()
        sampler = data_loader_kwargs.pop("sampler", None)
        if sampler is None:
            sampler = BatchIndexSampler(
                self.indices, self.minibatch_size, shuffle, drop_last, generator
            )
        data_loader_kwargs.setdefault("num_workers", settings.dl_num_workers)
        data_loader_kwargs.setdefault("collate_fn", _as_tensors)
        # batch_size=None turns off torch's own batching: each sampler item is a whole batch.
        super().__init__(
            dataset, sampler=sampler, batch_size=None, generator=generator, **data_loader_kwargs
        )
