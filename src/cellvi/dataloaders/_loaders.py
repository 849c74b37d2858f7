"""One loader over some cells: from the device-resident copy when there is one, else the host."""

from __future__ import annotations

from typing import Any

import numpy as np

from cellvi.data import AnnDataManager
from cellvi.dataloaders._ann_dataloader import AnnDataLoader
from cellvi.dataloaders._resident import ResidentTensors
from cellvi.dataloaders._resident_loader import ResidentLoader
from cellvi.dataloaders._streaming import StreamingLoader


def build_loader(
    adata_manager: AnnDataManager,
    indices: np.ndarray,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
    resident: ResidentTensors | None = None,
    loader_cls: type[AnnDataLoader] | type[StreamingLoader] = AnnDataLoader,
    distributed: bool = False,
    **host_options: Any,
) -> AnnDataLoader | ResidentLoader | StreamingLoader:
    """A loader of the cells ``indices``, gathered on the device when ``resident`` is given.

    Parameters
    ----------
    adata_manager
        Manager holding the registered AnnData (read by the host loader).
    indices
        Cells to serve.
    batch_size, shuffle, drop_last
        Minibatching, the same on both paths.
    resident
        The device-resident fields; ``None`` reads from the host with ``loader_cls``.
    loader_cls
        The host loader class (or :class:`StreamingLoader`, for data on disk).
    distributed
        Serve only this process's share of the cells (a distributed fit).
    **host_options
        Arguments only the host loader has (``pin_memory``, ``data_and_attributes``, ...);
        on the resident path, one that is set is an error naming it.
    """
    if resident is None and loader_cls is StreamingLoader:
        return StreamingLoader(
            adata_manager,
            indices=indices,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            distributed=distributed,
            **host_options,
        )
    if resident is None:
        if distributed:
            host_options = {**host_options, "distributed_sampler": True}
        return loader_cls(
            adata_manager,
            indices=indices,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            **host_options,
        )
    given = [name for name, value in host_options.items() if value]
    if given:
        raise ValueError(
            f"The device-resident data cannot honour {', '.join(given)}: these belong to the "
            "host loader. Drop them, or load from the host."
        )
    return ResidentLoader(
        resident, indices, batch_size, shuffle, drop_last, distributed=distributed
    )
