"""``SemiSupervisedDataLoader``: minibatches of all cells, each with one of labeled cells."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from cellvi._checks import check_positive_int
from cellvi.data import AnnDataManager
from cellvi.data._indices import as_cell_indices
from cellvi.dataloaders._ann_dataloader import AnnDataLoader
from cellvi.dataloaders._concat_dataloader import Batch, ConcatDataLoader
from cellvi.dataloaders._generator import order_generator
from cellvi.dataloaders._labels import label_codes
from cellvi.dataloaders._resident import ResidentTensors
from cellvi.dataloaders._resident_loader import ResidentLoader


class SemiSupervisedDataLoader(ConcatDataLoader):
    """Yield ``(minibatch of the cells, minibatch of their labeled cells)`` at every step.

    The first loader passes over ``indices``; the second over the labeled cells among them
    (those whose label is not the registered unlabeled category), optionally subsampled to
    ``n_samples_per_label`` cells per label. A shuffled loader draws a new subsample at each
    epoch (``resample_labels`` draws one at once, e.g. from a callback; the next epoch then
    keeps it), reproducibly under ``cellvi.settings.seed``.

    A shuffled (training) loader leaves out a last labeled minibatch of a single cell, as
    batch normalisation cannot train on one (scvi-tools fails there); the shuffle leaves out
    another cell each epoch. The labeled minibatches only ride beside those of all cells,
    which keep every cell (``drop_last`` aside).

    Parameters
    ----------
    adata_manager
        Manager holding the AnnData, with labels registered with an unlabeled category.
    n_samples_per_label
        Labeled cells per label in each epoch, drawn without replacement (every cell of a label
        with fewer); ``None`` serves every labeled cell.
    indices
        Cells to load (integer positions or a boolean mask); ``None`` loads every cell.
    shuffle, batch_size, data_and_attributes, drop_last, resident, **data_loader_kwargs
        As in :class:`ConcatDataLoader`, for both loaders.

    Attributes
    ----------
    labeled_locs
        The labeled cells among ``indices``, one array per label.
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        n_samples_per_label: int | None = None,
        indices: npt.ArrayLike | None = None,
        shuffle: bool = False,
        batch_size: int | None = None,
        data_and_attributes: Sequence[str] | Mapping[str, npt.DTypeLike] | None = None,
        drop_last: bool = False,
        resident: ResidentTensors | None = None,
        **data_loader_kwargs: Any,
    ) -> None:
        if n_samples_per_label is not None:
            check_positive_int("n_samples_per_label", n_samples_per_label)
        self.n_samples_per_label = n_samples_per_label
        codes, unlabeled_code = label_codes(adata_manager)
        self.indices = as_cell_indices(indices, codes.size)
        self.labeled_locs = [
            self.indices[codes[self.indices] == label]
            for label in np.unique(codes)
            if label != unlabeled_code
        ]
        self._generator = order_generator()
        super().__init__(
            adata_manager,
            [self.indices],
            shuffle=shuffle,
            batch_size=batch_size,
            data_and_attributes=data_and_attributes,
            drop_last=drop_last,
            resident=resident,
            **data_loader_kwargs,
        )
        self.dataloaders.append(self._labeled_loader(self.subsample_labels()))
        self._subsample_is_fresh = True

    def subsample_labels(self) -> np.ndarray:
        """A draw of up to ``n_samples_per_label`` labeled cells of each label."""
        if not self.labeled_locs:
            return np.empty(0, dtype=np.int64)
        if self.n_samples_per_label is None:
            return np.concatenate(self.labeled_locs)
        n_draw = self.n_samples_per_label
        drawn = [
            loc[torch.randperm(loc.size, generator=self._generator)[:n_draw].numpy()]
            for loc in self.labeled_locs
        ]
        return np.concatenate(drawn)

    def resample_labels(self) -> None:
        """Draw a new subsample of labeled cells, served from the next pass on."""
        self.dataloaders[1] = self._labeled_loader(self.subsample_labels())
        self._subsample_is_fresh = True

    def _labeled_loader(self, labeled: np.ndarray) -> AnnDataLoader | ResidentLoader:
        """The loader of the labeled cells, without a lone last cell when shuffled.

        Fewer labeled cells than a minibatch keep them all, even with ``drop_last``: an empty
        labeled stream would leave the epoch without a step.
        """
        fills_a_minibatch = labeled.size >= self._batch_size
        lone_tail = self._shuffle and labeled.size % self._batch_size == 1
        return self._make_loader(
            labeled, drop_last=fills_a_minibatch and (self._drop_last or lone_tail)
        )

    def __iter__(self) -> Iterator[tuple[Batch, ...]]:
        if self._shuffle and self.n_samples_per_label is not None and not self._subsample_is_fresh:
            self.resample_labels()
        self._subsample_is_fresh = False
        return super().__iter__()
