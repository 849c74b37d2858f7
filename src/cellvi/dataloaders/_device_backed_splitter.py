"""``DeviceBackedDataSplitter``: a ``DataSplitter`` that always holds the data on a device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cellvi.data import AnnDataManager
from cellvi.dataloaders._data_splitter import DataSplitter
from cellvi.dataloaders._device import resolve_device


class DeviceBackedDataSplitter(DataSplitter):
    """Split the cells and serve each split from a copy of the data held on one device.

    This is :class:`DataSplitter`'s device-resident path, always taken
    (``device_resident=True``), on the device named by ``accelerator`` and ``device`` rather
    than the trainer's, with scvi-tools' defaults for this class: each split is one
    minibatch unless ``batch_size`` is given, and nothing is shuffled unless asked. Options
    that belong to the host loader (``pin_memory``, ``num_workers``, ...) are errors.

    Parameters
    ----------
    adata_manager
        Manager holding the registered AnnData.
    train_size, validation_size, external_indexing
        As in :class:`DataSplitter`.
    accelerator
        ``"auto"`` (a GPU when there is one), ``"cpu"``, ``"gpu"`` or ``"cuda"``.
    device
        Device index, or ``"auto"``.
    pin_memory
        Refused when ``True``: the data do not pass through host memory during training.
    shuffle
        Serve the training cells in a new order at each epoch. When ``False``, every split is
        served in ascending cell order.
    shuffle_test_val
        Serve the validation and test cells in a new order at each pass.
    batch_size
        Cells per minibatch; ``None`` serves each split as a single minibatch.
    **kwargs
        Further :class:`DataSplitter` arguments (``shuffle_set_split``, ``drop_last``, ...).
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        train_size: float | None = None,
        validation_size: float | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        pin_memory: bool = False,
        shuffle: bool = False,
        shuffle_test_val: bool = False,
        batch_size: int | None = None,
        external_indexing: Sequence[np.ndarray | None] | None = None,
        **kwargs: Any,
    ) -> None:
        if "device_resident" in kwargs:
            raise TypeError(
                "DeviceBackedDataSplitter always holds the data on the device; use DataSplitter "
                "to choose device_resident."
            )
        self.device = resolve_device(accelerator, device)
        super().__init__(
            adata_manager,
            train_size=train_size,
            validation_size=validation_size,
            pin_memory=pin_memory,
            external_indexing=external_indexing,
            device_resident=True,
            batch_size=batch_size,
            **kwargs,
        )
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.shuffle_test_val = shuffle_test_val
        self._shuffles = (shuffle, shuffle_test_val)
        if not shuffle:
            self.train_idx, self.val_idx, self.test_idx = (
                np.sort(self.train_idx),
                np.sort(self.val_idx),
                np.sort(self.test_idx),
            )

    def _resident_device(self) -> torch.device:
        return self.device

    def _minibatch_size(self, indices: np.ndarray) -> int:
        return self.batch_size if self.batch_size is not None else max(indices.size, 1)
