"""``ConcatDataLoader``: minibatches of several cell subsets, served side by side."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from cellvi._settings import settings
from cellvi.data import AnnDataManager
from cellvi.data._indices import as_cell_indices
from cellvi.dataloaders._ann_dataloader import AnnDataLoader
from cellvi.dataloaders._loaders import build_loader
from cellvi.dataloaders._resident import ResidentTensors
from cellvi.dataloaders._resident_loader import ResidentLoader

Batch = dict[str, torch.Tensor]


class ConcatDataLoader:
    """Serve one minibatch of each of several cell subsets per step, as a tuple.

    An epoch is one pass over the subset with the most minibatches; the others start over
    (in a new order when shuffled) whenever they run out, so every step has a minibatch of
    each. With ``distributed_sampler`` no loader starts over and the epoch ends with the
    shortest. A subset without cells gives an epoch without steps.

    Parameters
    ----------
    adata_manager
        Manager holding the registered AnnData.
    indices_list
        The cell subsets (integer positions or boolean masks); tuples follow this order.
    shuffle
        Draw a new order for each pass of each subset.
    batch_size
        Cells per minibatch of every subset; ``None`` uses ``cellvi.settings.batch_size``.
    data_and_attributes
        Registry keys to load (see :class:`AnnTorchDataset`); host loading only.
    drop_last
        Leave out the last, incomplete minibatch of each subset.
    distributed_sampler
        Give each process of a distributed run its share of every subset (host loading only).
    resident
        Gather the minibatches from this device-resident copy of the data instead of reading
        them on the host.
    distributed
        Serve this process's share of every subset in a distributed fit, on either path
        (each subset through a ``BatchDistributedSampler``); the epoch still passes over the
        largest subset's share while the others start over, and ``sampler`` hands Lightning's
        epoch to every subset, so each epoch draws new shares.
    **data_loader_kwargs
        Further :class:`AnnDataLoader` arguments of the host path (``pin_memory``, ...).
    """

    # Lightning looks for samplers here and on ``batch_sampler``; the subsets batch themselves.
    batch_sampler = None

    def __init__(
        self,
        adata_manager: AnnDataManager,
        indices_list: Sequence[npt.ArrayLike],
        shuffle: bool = False,
        batch_size: int | None = None,
        data_and_attributes: Sequence[str] | Mapping[str, npt.DTypeLike] | None = None,
        drop_last: bool = False,
        distributed_sampler: bool = False,
        resident: ResidentTensors | None = None,
        distributed: bool = False,
        **data_loader_kwargs: Any,
    ) -> None:
        if len(indices_list) == 0:
            raise ValueError("ConcatDataLoader needs at least one subset of cells.")
        self.adata_manager = adata_manager
        self.data_and_attributes = data_and_attributes
        self.data_loader_kwargs = data_loader_kwargs
        self.resident = resident
        self._shuffle = shuffle
        self._batch_size = settings.batch_size if batch_size is None else batch_size
        self._drop_last = drop_last
        self._distributed_sampler = distributed_sampler
        self._distributed = distributed
        # Lightning sets the epoch of a distributed fit on ``sampler``; none without one.
        self.sampler = _SubsetEpochs(self) if distributed else None
        self.dataloaders = [self._make_loader(indices) for indices in indices_list]

    def _make_loader(
        self, indices: npt.ArrayLike, drop_last: bool | None = None
    ) -> AnnDataLoader | ResidentLoader:
        """A loader over one subset, with this loader's options (``drop_last`` may differ)."""
        n_cells = self.adata_manager.adata.n_obs
        loader = build_loader(
            self.adata_manager,
            as_cell_indices(indices, n_cells),
            self._batch_size,
            self._shuffle,
            self._drop_last if drop_last is None else drop_last,
            resident=self.resident,
            distributed=self._distributed,
            data_and_attributes=self.data_and_attributes,
            distributed_sampler=self._distributed_sampler,
            **self.data_loader_kwargs,
        )
        if self.sampler is not None:
            self.sampler.set_loader_epoch(loader)
        return loader

    @property
    def largest_dl(self) -> AnnDataLoader | ResidentLoader:
        """The subset loader with the most minibatches (the first of them on a tie)."""
        return self.dataloaders[int(np.argmax([len(dl) for dl in self.dataloaders]))]

    def __len__(self) -> int:
        lengths = [len(dl) for dl in self.dataloaders]
        return min(lengths) if self._distributed_sampler or 0 in lengths else max(lengths)

    def __iter__(self) -> Iterator[tuple[Batch, ...]]:
        if len(self) == 0:
            return iter(())
        if self._distributed_sampler:
            return zip(*self.dataloaders, strict=False)
        largest = self.largest_dl
        return zip(
            *(dl if dl is largest else _repeat(dl) for dl in self.dataloaders), strict=False
        )


class _SubsetEpochs:
    """Hand the epoch Lightning sets on a distributed fit's loader to every subset's sampler."""

    def __init__(self, loader: ConcatDataLoader) -> None:
        self._loader = loader
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set ``epoch`` on the subsets' samplers (and on those of subsets made later)."""
        self.epoch = epoch
        for loader in self._loader.dataloaders:
            self.set_loader_epoch(loader)

    def set_loader_epoch(self, loader: Any) -> None:
        """Set this epoch on ``loader``'s distributed sampler."""
        loader.sampler.set_epoch(self.epoch)


def _repeat(loader: Iterable[Batch]) -> Iterator[Batch]:
    """Pass over ``loader`` again and again (a fresh pass, so a new order when shuffled)."""
    while True:
        yield from loader
