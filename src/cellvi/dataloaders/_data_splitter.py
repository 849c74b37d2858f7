"""``DataSplitter``: train / validation / test cell splits served as Lightning data loaders."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import numpy.typing as npt
import torch

from cellvi._checks import check_positive_int, keyword_names
from cellvi._settings import settings
from cellvi.data import AnnDataManager, AnnTorchDataset
from cellvi.data._anntorchdataset import held_adata
from cellvi.dataloaders._ann_dataloader import AnnDataLoader, check_data_loader_kwargs
from cellvi.dataloaders._device import check_device_resident, fits_on_device
from cellvi.dataloaders._external_indexing import validate_external_indexing
from cellvi.dataloaders._resident import ResidentTensors
from cellvi.dataloaders._resident_loader import ResidentLoader

logger = logging.getLogger("cellvi")

# Products such as 0.7 * 10 land a hair above 7 in floating point; rounding them first keeps
# ceil/floor from adding or losing a cell. 9 digits stays exact for any realistic cell count.
_SIZE_DIGITS = 9


def split_sizes(
    n_cells: int, train_size: float = 0.9, validation_size: float | None = None
) -> tuple[int, int]:
    """Numbers of train and validation cells; the test split takes the remaining cells.

    ``n_train = ceil(train_size * n_cells)``; ``n_val = floor(validation_size * n_cells)``, or
    every cell not in train when ``validation_size`` is ``None``.

    Parameters
    ----------
    n_cells
        Number of cells to split.
    train_size
        Fraction of cells for training, in (0, 1].
    validation_size
        Fraction of cells for validation, in [0, 1); ``train_size + validation_size <= 1``.

    Returns
    -------
    ``(n_train, n_val)``.
    """
    if not 0 < train_size <= 1:
        raise ValueError(f"train_size must be in (0, 1], got {train_size}.")
    if validation_size is not None:
        if not 0 <= validation_size < 1:
            raise ValueError(f"validation_size must be in [0, 1), got {validation_size}.")
        if round(train_size + validation_size, _SIZE_DIGITS) > 1:
            raise ValueError(
                f"train_size + validation_size must be at most 1, got {train_size} + "
                f"{validation_size} = {train_size + validation_size}."
            )
    n_train = math.ceil(round(train_size * n_cells, _SIZE_DIGITS))
    if n_train < 1:
        raise ValueError(
            f"train_size={train_size} of {n_cells} cells leaves no training cell; "
            "the training split needs at least one."
        )
    if validation_size is None:
        return n_train, n_cells - n_train
    n_val = math.floor(round(validation_size * n_cells, _SIZE_DIGITS))
    return n_train, min(n_val, n_cells - n_train)


class DataSplitter(pl.LightningDataModule):
    """Split the registered cells into train, validation and test sets, with their loaders.

    The splits are drawn at construction, so ``train_idx``, ``val_idx`` and ``test_idx`` can
    be read right away. An empty validation (or test) split yields ``[]`` instead of a loader,
    which Lightning takes as "no validation loop" (it warns that the list is empty).

    Two data paths serve the minibatches. The device-resident path (``device_resident``)
    moves the registered data once to the training device and gathers each minibatch there;
    the host path is an :class:`AnnDataLoader` per split, copying each minibatch from the
    host. Options only the host path has (``load_sparse_tensor``, ``pin_memory``,
    ``num_workers`` and the other ``data_loader_kwargs``) choose it under
    ``device_resident="auto"`` and are an error under ``device_resident=True``. The resident
    copy is released when the fit ends (``teardown``), or fails.

    Parameters
    ----------
    adata_manager
        Manager holding the registered AnnData.
    train_size
        Fraction of cells for training, in (0, 1]; ``ceil(train_size * n_cells)`` cells.
    validation_size
        Fraction of cells for validation, in [0, 1); ``floor(validation_size * n_cells)``
        cells. ``None`` puts every non-training cell in validation (no test cells).
    shuffle_set_split
        Draw the splits at random (reproducible under ``cellvi.settings.seed``); ``False``
        takes train, then validation, then test in cell order.
    load_sparse_tensor
        Yield fields stored sparse as torch sparse CSR tensors (host path).
    pin_memory
        Pin minibatches in page-locked memory, for faster copies to a GPU (host path).
    external_indexing
        ``[train, validation, test]`` arrays of cell indices used as given instead of drawing
        splits (sizes are then ignored). Train must be non-empty; validation and test may be
        ``None`` or empty; no index may repeat within or across splits. Cells in none of
        them are not used.
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
    **data_loader_kwargs
        Further :class:`torch.utils.data.DataLoader` arguments of the host loader
        (``persistent_workers``, ``prefetch_factor``, ...); an unknown name is an error.

    Attributes
    ----------
    train_idx, val_idx, test_idx
        Cell indices (int64 arrays) of each split.
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        train_size: float = 0.9,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        load_sparse_tensor: bool = False,
        pin_memory: bool = False,
        external_indexing: Sequence[npt.ArrayLike | None] | None = None,
        device_resident: bool | Literal["auto"] = "auto",
        batch_size: int | None = None,
        drop_last: bool = False,
        num_workers: int | None = None,
        data_and_attributes: Sequence[str] | None = None,
        **data_loader_kwargs: Any,
    ) -> None:
        super().__init__()
        check_device_resident(device_resident)
        check_data_loader_kwargs(
            data_loader_kwargs,
            "DataSplitter",
            keyword_names(DataSplitter.__init__) - {"adata_manager"},
        )
        adata = held_adata(adata_manager)
        self.adata_manager = adata_manager
        self.train_size = train_size
        self.validation_size = validation_size
        self.shuffle_set_split = shuffle_set_split
        self.load_sparse_tensor = load_sparse_tensor
        self.pin_memory = pin_memory
        self.batch_size = check_positive_int(
            "batch_size", settings.batch_size if batch_size is None else batch_size
        )
        self.drop_last = drop_last
        self.num_workers = settings.dl_num_workers if num_workers is None else num_workers
        self.data_and_attributes = data_and_attributes
        self.data_loader_kwargs = data_loader_kwargs
        self.device_resident = device_resident
        self._check_data_path()
        n_cells = int(adata.n_obs)
        if external_indexing is not None:
            self.train_idx, self.val_idx, self.test_idx = validate_external_indexing(
                external_indexing, n_cells
            )
        else:
            self.train_idx, self.val_idx, self.test_idx = self._draw_splits(n_cells)
        self.n_train = int(self.train_idx.size)
        self.n_val = int(self.val_idx.size)
        self.resident: ResidentTensors | None = None
        remainder = self.n_train % self.batch_size
        if not self.drop_last and 0 < remainder < 3 and self.n_train > self.batch_size:
            # A minibatch of one or two cells gives batch norm no usable statistics (one cell
            # is an error in training mode); dropping it loses those cells for one epoch only.
            logger.info("Dropping the last training minibatch of %d cells each epoch.", remainder)
            self.drop_last = True

    def _host_only_options(self) -> list[str]:
        """The options given that only the host loader can honour."""
        given = {
            "load_sparse_tensor": self.load_sparse_tensor,
            "pin_memory": self.pin_memory,
            "num_workers": self.num_workers,
            **self.data_loader_kwargs,
        }
        return [name for name, value in given.items() if value]

    def _is_backed(self) -> bool:
        # A backed AnnData's matrix stays in its file; minibatches read it there.
        adata = self.adata_manager.adata
        return bool(getattr(adata, "isbacked", False))

    def _check_data_path(self) -> None:
        if self._is_backed() and self.device_resident is True:
            raise ValueError(
                "device_resident=True cannot hold a backed AnnData on the device: its matrix "
                "is read from the file for each minibatch. Load it (adata.to_memory()), or "
                "pass device_resident='auto' or False."
            )
        host_only = self._host_only_options()
        if host_only and self.device_resident is True:
            raise ValueError(
                f"device_resident=True cannot honour {', '.join(host_only)}: these belong to the "
                "host loader. Drop them, or pass device_resident='auto' or False."
            )

    def _draw_splits(self, n_cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_train, n_val = split_sizes(n_cells, self.train_size, self.validation_size)
        if self.shuffle_set_split:
            order = np.random.default_rng(settings.seed).permutation(n_cells)
        else:
            order = np.arange(n_cells)
        order = order.astype(np.int64, copy=False)
        return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]

    def setup(self, stage: str | None = None) -> None:
        """Move the data to the training device when the resident path is chosen.

        The splits themselves are drawn at construction, so users can read them before
        training.
        """
        device = (
            self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        )
        if self.resident is not None and self.resident.device == device:
            return
        self.release()
        if self.device_resident is False or self._host_only_options() or self._is_backed():
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

    def _loader(
        self, indices: np.ndarray, shuffle: bool, drop_last: bool
    ) -> AnnDataLoader | ResidentLoader:
        if self.resident is not None:
            return ResidentLoader(
                self.resident, indices, self.batch_size, shuffle=shuffle, drop_last=drop_last
            )
        return AnnDataLoader(
            self.adata_manager,
            indices=indices,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            data_and_attributes=self.data_and_attributes,
            load_sparse_tensor=self.load_sparse_tensor,
            pin_memory=self.pin_memory,
            num_workers=self.num_workers,
            **self.data_loader_kwargs,
        )

    def train_dataloader(self) -> AnnDataLoader | ResidentLoader:
        """Shuffled minibatches of the training cells."""
        return self._loader(self.train_idx, shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> AnnDataLoader | ResidentLoader | list:
        """Minibatches of the validation cells, in order; ``[]`` (no loop) when there are none."""
        if self.val_idx.size == 0:
            return []
        return self._loader(self.val_idx, shuffle=False, drop_last=False)

    def test_dataloader(self) -> AnnDataLoader | ResidentLoader | list:
        """Minibatches of the test cells, in order; ``[]`` (no loop) when there are none."""
        if self.test_idx.size == 0:
            return []
        return self._loader(self.test_idx, shuffle=False, drop_last=False)
