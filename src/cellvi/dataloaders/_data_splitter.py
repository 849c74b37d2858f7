"""``DataSplitter``: train / validation / test cell splits served as Lightning data loaders."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch

from cellvi._checks import check_positive_int, keyword_names
from cellvi._settings import settings
from cellvi.data import AnnDataManager, AnnTorchDataset
from cellvi.data._anntorchdataset import held_adata, reads_from_disk
from cellvi.dataloaders._ann_dataloader import (
    AnnDataLoader,
    check_data_loader_kwargs,
    check_sampling_options,
)
from cellvi.dataloaders._device import check_device_resident, fits_on_device
from cellvi.dataloaders._external_indexing import validate_external_indexing
from cellvi.dataloaders._loaders import build_loader
from cellvi.dataloaders._resident import ResidentTensors
from cellvi.dataloaders._resident_loader import ResidentLoader
from cellvi.dataloaders._split_sizes import fit_last_minibatch, split_sizes
from cellvi.dataloaders._streaming import StreamingConfig, StreamingLoader

logger = logging.getLogger("cellvi")

Splits = tuple[np.ndarray, np.ndarray, np.ndarray]
Loader = AnnDataLoader | ResidentLoader | StreamingLoader

# AnnDataLoader arguments the splitter sets for each split itself.
_SET_PER_SPLIT = {"adata_manager", "indices", "shuffle", "sampler"}


class DataSplitter(pl.LightningDataModule):
    """Split the registered cells into train, validation and test sets, with their loaders.

    The splits are drawn at construction, so ``train_idx``, ``val_idx`` and ``test_idx`` can
    be read right away. In cell order (or in a random order, with ``shuffle_set_split``) the
    first ``n_val`` cells are for validation, the next ``n_train`` for training and the rest
    for testing; the random order is numpy's ``RandomState(cellvi.settings.seed)``
    permutation, so a seed gives the splits scvi-tools gives with it. An empty validation
    (or test) split yields ``[]`` instead of a loader, which Lightning takes as "no
    validation loop".

    Three data paths serve the minibatches. The device-resident path (``device_resident``)
    moves the registered data once to the training device and gathers each minibatch there;
    the host path is an :class:`AnnDataLoader` per split, copying each minibatch from the
    host. Options only the host path has (``load_sparse_tensor``, ``pin_memory``,
    ``num_workers`` and the other ``data_loader_kwargs``) choose it under
    ``device_resident="auto"`` and are an error under ``device_resident=True``. The resident
    copy is released when the fit ends (``teardown``), or fails. Data that stay on disk (a
    backed h5ad, a zarr store's matrix) take the out-of-core path: a
    :class:`StreamingLoader` per split, reading block-shuffled windows of cells in a
    background thread (``streaming`` sets its block size and buffer), unless host-only
    options other than ``load_sparse_tensor`` ask for the host loader.

    In a distributed fit (Lightning's ``strategy="ddp"``, several devices or nodes) every
    split's loader serves only this process's share of its cells, in an order drawn anew
    each epoch and different on each rank (``DistributedSampler``'s semantics: every rank
    draws the epoch's permutation from ``settings.seed + epoch`` and takes its part).

    Parameters
    ----------
    adata_manager
        Manager holding the registered AnnData.
    train_size
        Fraction of cells for training, in (0, 1]: ``ceil(train_size * n_cells)`` cells.
        ``None`` (or 0) means 0.9, and then one or two cells that would make a last training
        minibatch of their own move to the validation set (see :func:`fit_last_minibatch`).
    validation_size
        Fraction of cells for validation, in [0, 1): ``floor(n_cells * validation_size)``
        cells. ``None`` puts every non-training cell in validation (no test cells).
    shuffle_set_split
        Draw the splits at random; ``False`` takes validation, then train, then test in cell
        order.
    load_sparse_tensor
        Yield fields stored sparse as torch sparse tensors of their layout (host path); they
        are made dense once on the training device (``on_after_batch_transfer``).
    pin_memory
        Pin minibatches in page-locked memory, for faster copies to a GPU (host path).
    external_indexing
        ``[train, validation, test]`` numpy arrays of cell indices used as given instead of
        drawing splits (sizes are then ignored); validation and test may be missing or
        ``None``. Together they must hold every cell exactly once (see
        :func:`validate_external_indexing`).
    device_resident
        ``"auto"``: hold the data on the training device when they fit, no host-only
        option is given and the AnnData is not backed; ``True``: always (an error when
        impossible); ``False``: never.
    batch_size
        Cells per minibatch; ``None`` uses ``cellvi.settings.batch_size``.
    drop_last
        Leave out the last, incomplete training minibatch (validation and test keep theirs).
    num_workers
        Worker processes of the host loader; ``None`` uses ``cellvi.settings.dl_num_workers``.
    data_and_attributes
        Registry keys to load (see :class:`AnnTorchDataset`); ``None`` loads every field.
    streaming
        Block size, buffer and prefetch depth of the out-of-core path
        (:class:`StreamingConfig`, or a mapping of its fields); ``None``: its defaults.
    **data_loader_kwargs
        Further arguments of the host loaders: :class:`AnnDataLoader`'s (``iter_ndarray``,
        ``distributed_sampler``, ``drop_dataset_tail``) and
        :class:`torch.utils.data.DataLoader`'s (``persistent_workers``, ...). An unknown name
        is an error listing the valid ones.

    Attributes
    ----------
    train_idx, val_idx, test_idx
        Cell indices (int64 arrays) of each split.
    n_train, n_val
        Number of training and validation cells.
    """

    data_loader_cls = AnnDataLoader

    def __init__(
        self,
        adata_manager: AnnDataManager,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        load_sparse_tensor: bool = False,
        pin_memory: bool = False,
        external_indexing: Sequence[np.ndarray | None] | None = None,
        device_resident: bool | Literal["auto"] = "auto",
        batch_size: int | None = None,
        drop_last: bool = False,
        num_workers: int | None = None,
        data_and_attributes: Sequence[str] | None = None,
        streaming: StreamingConfig | dict[str, Any] | None = None,
        **data_loader_kwargs: Any,
    ) -> None:
        super().__init__()
        self.streaming = StreamingConfig.of(streaming)
        check_device_resident(device_resident)
        check_data_loader_kwargs(
            data_loader_kwargs,
            type(self).__name__,
            (keyword_names(AnnDataLoader.__init__) | keyword_names(DataSplitter.__init__))
            - _SET_PER_SPLIT,
        )
        if "sampler" in data_loader_kwargs:
            raise TypeError(
                f"{type(self).__name__} builds the sampler of each split itself; sampler= "
                "belongs to a single AnnDataLoader."
            )
        check_sampling_options(
            distributed_sampler=data_loader_kwargs.get("distributed_sampler", False),
            drop_dataset_tail=data_loader_kwargs.get("drop_dataset_tail", False),
        )
        adata = held_adata(adata_manager)
        self.adata_manager = adata_manager
        self.train_size = train_size or None
        self.validation_size = validation_size
        self.shuffle_set_split = shuffle_set_split
        self.load_sparse_tensor = load_sparse_tensor
        self.pin_memory = pin_memory
        self.external_indexing = external_indexing
        self.batch_size = check_positive_int(
            "batch_size", settings.batch_size if batch_size is None else batch_size
        )
        self.drop_last = drop_last
        self.num_workers = settings.dl_num_workers if num_workers is None else num_workers
        self.data_and_attributes = data_and_attributes
        self.data_loader_kwargs = data_loader_kwargs
        self.device_resident = device_resident
        # Whether the training, and the validation and test, loaders shuffle.
        self._shuffles = (True, False)
        self._check_data_path()
        self.resident: ResidentTensors | None = None
        self.train_idx, self.val_idx, self.test_idx = self._split(int(adata.n_obs))
        self.n_train = int(self.train_idx.size)
        self.n_val = int(self.val_idx.size)

    # Splits --------------------------------------------------------------------------------

    def _split(self, n_cells: int) -> Splits:
        """The train, validation and test cells (a subclass may split groups apart)."""
        if self.external_indexing is not None:
            splits = validate_external_indexing(self.external_indexing, n_cells)
            self._fit_last_minibatch(splits[0].size, splits[1].size, move_to_validation=False)
            return splits
        return self._draw(np.arange(n_cells, dtype=np.int64))

    def _draw(self, cells: np.ndarray) -> Splits:
        """Split ``cells`` by the sizes: validation first, then train, then test."""
        n_train, n_val = split_sizes(cells.size, self.train_size, self.validation_size)
        n_train, n_val = self._fit_last_minibatch(
            n_train, n_val, move_to_validation=self.train_size is None
        )
        if self.shuffle_set_split:
            cells = cells[np.random.RandomState(seed=settings.seed).permutation(cells.size)]
        return cells[n_val : n_val + n_train], cells[:n_val], cells[n_val + n_train :]

    def _fit_last_minibatch(
        self, n_train: int, n_val: int, move_to_validation: bool
    ) -> tuple[int, int]:
        n_train, n_val, self.drop_last = fit_last_minibatch(
            n_train, n_val, self.batch_size, self.drop_last, move_to_validation
        )
        return n_train, n_val

    # Data paths ----------------------------------------------------------------------------

    def _host_only_options(self) -> dict[str, Any]:
        """The options only the host loader has, as given."""
        return {
            "load_sparse_tensor": self.load_sparse_tensor,
            "pin_memory": self.pin_memory,
            "num_workers": self.num_workers,
            **self.data_loader_kwargs,
        }

    def _is_backed(self) -> bool:
        # A backed AnnData's (or a zarr store's) matrix stays in its file: the out-of-core path.
        return reads_from_disk(self.adata_manager)

    def _streams(self) -> bool:
        """Whether the splits are served by the out-of-core loader."""
        options = self._host_only_options()
        options.pop("load_sparse_tensor")
        return self._is_backed() and not any(options.values())

    def _distributed(self) -> bool:
        """Whether this fit runs on several processes (each serves its share of the cells)."""
        return self.trainer is not None and self.trainer.world_size > 1

    def _check_data_path(self) -> None:
        if self._is_backed() and self.device_resident is True:
            raise ValueError(
                "device_resident=True cannot hold a backed AnnData on the device: its matrix "
                "is read from the file for each minibatch. Load it (adata.to_memory()), or "
                "pass device_resident='auto' or False."
            )
        host_only = [name for name, value in self._host_only_options().items() if value]
        if host_only and self.device_resident is True:
            raise ValueError(
                f"{type(self).__name__} with device_resident=True cannot honour "
                f"{', '.join(host_only)}: these belong to the host loader. Drop them, or pass "
                "device_resident='auto' or False."
            )

    def _resident_device(self) -> torch.device:
        """Where the resident copy goes: the training device (the CPU outside a fit)."""
        if self.trainer is None:
            return torch.device("cpu")
        return self.trainer.strategy.root_device

    def setup(self, stage: str | None = None) -> None:
        """Move the data to the training device when the resident path is chosen.

        The splits themselves are drawn at construction, so users can read them before
        training.
        """
        device = self._resident_device()
        if self.resident is not None and self.resident.device == device:
            return
        self.release()
        host_only = any(self._host_only_options().values())
        if self.device_resident is False or host_only or self._is_backed():
            return
        dataset = AnnTorchDataset(self.adata_manager, self.data_and_attributes)
        if self.device_resident == "auto" and not fits_on_device(
            ResidentTensors.nbytes(dataset), device
        ):
            logger.info(
                "The registered data do not fit on %s; minibatches are copied from the host.",
                device,
            )
            return
        self.resident = ResidentTensors(dataset, device)

    def release(self) -> None:
        """Free the device-resident copy of the data (loaders made from it stop working)."""
        if self.resident is not None:
            self.resident.release()
            self.resident = None

    def teardown(self, stage: str) -> None:
        """Release the resident data when a fit (or another Lightning stage) ends."""
        self.release()

    def on_exception(self, exception: BaseException) -> None:
        """Release the resident data when a fit fails."""
        self.release()

    # Loaders -------------------------------------------------------------------------------

    def _loader_options(self) -> dict[str, Any]:
        """Arguments of every split's loader beyond its cells and minibatching."""
        if self.resident is not None:
            return {"resident": self.resident}
        if self._streams():
            return {
                "loader_cls": StreamingLoader,
                "streaming": self.streaming,
                "data_and_attributes": self.data_and_attributes,
                "load_sparse_tensor": self.load_sparse_tensor,
            }
        if self.device_resident is True:
            raise RuntimeError(
                f"{type(self).__name__} serves the data from the device: call setup() first "
                "(Lightning does at the start of a fit)."
            )
        return {
            "data_and_attributes": self.data_and_attributes,
            "loader_cls": self.data_loader_cls,
            **self._host_only_options(),
        }

    def _minibatch_size(self, indices: np.ndarray) -> int:
        """Cells per minibatch of a split's loader."""
        return self.batch_size

    def _loader(self, indices: np.ndarray, shuffle: bool, drop_last: bool) -> Loader:
        return build_loader(
            self.adata_manager,
            indices,
            self._minibatch_size(indices),
            shuffle,
            drop_last,
            distributed=self._distributed(),
            **self._loader_options(),
        )

    def train_dataloader(self) -> Loader:
        """Minibatches of the training cells, in a new order each epoch."""
        return self._loader(self.train_idx, shuffle=self._shuffles[0], drop_last=self.drop_last)

    def val_dataloader(self) -> Loader | list:
        """Minibatches of the validation cells, in order; ``[]`` (no loop) when there are none."""
        if self.val_idx.size == 0:
            return []
        return self._loader(self.val_idx, shuffle=self._shuffles[1], drop_last=False)

    def test_dataloader(self) -> Loader | list:
        """Minibatches of the test cells, in order; ``[]`` (no loop) when there are none."""
        if self.test_idx.size == 0:
            return []
        return self._loader(self.test_idx, shuffle=self._shuffles[1], drop_last=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Make sparse fields dense once they are on the training device."""
        return _densified(batch) if self.load_sparse_tensor else batch


def _densified(batch: Any) -> Any:
    """``batch`` with each torch sparse tensor in it (nested dicts, tuples, lists) made dense."""
    if isinstance(batch, torch.Tensor):
        return batch if batch.layout == torch.strided else batch.to_dense()
    if isinstance(batch, dict):
        return {key: _densified(value) for key, value in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_densified(value) for value in batch)
    return batch
