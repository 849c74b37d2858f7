"""``SemiSupervisedDataSplitter``: splits that keep labeled cells in each, and their loaders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np

from cellvi.data import AnnDataManager
from cellvi.dataloaders._data_splitter import DataSplitter, Loader, Splits
from cellvi.dataloaders._external_indexing import validate_external_indexing
from cellvi.dataloaders._labels import labeled_cells
from cellvi.dataloaders._semi_dataloader import SemiSupervisedDataLoader
from cellvi.dataloaders._split_sizes import fit_last_minibatch


class SemiSupervisedDataSplitter(DataSplitter):
    """Split labeled and unlabeled cells apart, so each split keeps its share of labeled cells.

    The labeled cells (label other than the registered unlabeled category) and the unlabeled
    ones are each split by :class:`DataSplitter`'s rules (sizes, order, seed); each split
    is then its labeled cells followed by its unlabeled ones. With ``external_indexing`` the
    given splits are kept, their labeled cells first (each part in ascending order).

    The default ``train_size`` moves a group's last one or two training cells to validation,
    group by group, so both libraries split the same cells. The model trains on minibatches
    of the whole training split, so that split's last minibatch is what must not hold a
    single cell (refused, as by :class:`DataSplitter`); the labeled minibatches beside them
    leave out a lone last cell themselves (:class:`SemiSupervisedDataLoader`). When
    some cell is labeled, every loader is a :class:`SemiSupervisedDataLoader` (a tuple of a
    minibatch of the split and one of its labeled cells at each step), on the host or the
    device-resident path; else the loaders are :class:`DataSplitter`'s.

    Parameters
    ----------
    adata_manager
        Manager holding the AnnData, with labels registered with an unlabeled category (see
        :class:`~cellvi.data.fields.LabelsWithUnlabeledObsField`).
    datamodule
        Must be ``None``: scvi-tools' signature has it, but a custom data module replaces the
        splitter instead of being split by it.
    train_size, validation_size, shuffle_set_split, pin_memory, external_indexing
        As in :class:`DataSplitter`.
    n_samples_per_label
        Labeled cells per label served in each epoch (see :class:`SemiSupervisedDataLoader`);
        ``None`` serves them all.
    **kwargs
        Further :class:`DataSplitter` arguments (``batch_size``, ``device_resident``, ...).
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        datamodule: pl.LightningDataModule | None = None,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        n_samples_per_label: int | None = None,
        pin_memory: bool = False,
        external_indexing: Sequence[np.ndarray | None] | None = None,
        **kwargs: Any,
    ) -> None:
        if datamodule is not None:
            raise ValueError(
                "SemiSupervisedDataSplitter splits the registered AnnData; a custom datamodule "
                "takes the splitter's place instead (pass it to train(datamodule=...))."
            )
        self.n_samples_per_label = n_samples_per_label
        self._labeled = labeled_cells(adata_manager)
        super().__init__(
            adata_manager,
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            pin_memory=pin_memory,
            external_indexing=external_indexing,
            **kwargs,
        )

    def _split(self, n_cells: int) -> Splits:
        groups = [np.flatnonzero(self._labeled), np.flatnonzero(~self._labeled)]
        if self.external_indexing is not None:
            given = validate_external_indexing(self.external_indexing, n_cells)
            parts = [tuple(np.intersect1d(split, group) for split in given) for group in groups]
        else:
            # Without any cell, the labeled group's draw raises the usual empty-split error.
            parts = [self._draw(group) for group in groups if group.size] or [
                self._draw(groups[0])
            ]
        splits = tuple(
            np.concatenate([part[split] for part in parts]).astype(np.int64) for split in range(3)
        )
        _, _, self.drop_last = fit_last_minibatch(
            splits[0].size,
            splits[1].size,
            self.batch_size,
            self.drop_last,
            move_to_validation=False,
        )
        return splits

    def _fit_last_minibatch(
        self, n_train: int, n_val: int, move_to_validation: bool
    ) -> tuple[int, int]:
        # A group's cells are not a minibatch stream of their own: only the default size's
        # moves apply per group; the whole training split is checked in _split.
        if not move_to_validation:
            return n_train, n_val
        return super()._fit_last_minibatch(n_train, n_val, move_to_validation)

    def _loader(
        self, indices: np.ndarray, shuffle: bool, drop_last: bool
    ) -> Loader | SemiSupervisedDataLoader:
        if not self._labeled.any():
            return super()._loader(indices, shuffle, drop_last)
        options = self._loader_options()
        # Data on disk: the subsets read their rows from the file with the host loader.
        options.pop("loader_cls", None)
        options.pop("streaming", None)
        return SemiSupervisedDataLoader(
            self.adata_manager,
            self.n_samples_per_label,
            indices=indices,
            shuffle=shuffle,
            batch_size=self._minibatch_size(indices),
            drop_last=drop_last,
            distributed=self._distributed(),
            **options,
        )
