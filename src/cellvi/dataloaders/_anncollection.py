"""``CollectionAdapter``: an ``AnnCollection`` set up and trained on as if it were an AnnData."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import anndata
import numpy as np
import pandas as pd
from scipy import sparse

Matrix = np.ndarray | sparse.spmatrix


class _CollectionLayers(Mapping):
    """``adapter.layers``: each layer of the collection's AnnDatas, joined in cell order."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def _keys(self) -> list[str]:
        return list(self._collection[:0].layers.keys())

    def __getitem__(self, key: str) -> Matrix:
        if key not in self._keys():
            raise KeyError(key)
        return self._collection[:].layers[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


class CollectionAdapter:
    """Present an :class:`anndata.experimental.AnnCollection` as an AnnData.

    ``setup_anndata``, models and data loaders read an AnnData's ``obs``, ``var_names``,
    ``X``, ``layers`` and ``uns``; the adapter answers them from the collection, so a model
    trains on several AnnData objects (in memory or backed) without concatenating them
    first. The registration's codes go to the collection's ``obs`` and its identity to the
    adapter's own ``uns``. cellvi reads the registered data into memory, through the
    collection: ``X`` and ``adapter.layers[key]`` are the joined matrices (sparse or dense as
    stored). ``isinstance(adapter, AnnData)`` holds, as in scvi-tools.

    Parameters
    ----------
    collection
        The collection (made with the ``join_vars="inner"`` the models need: one gene set).

    Examples
    --------
    >>> collection = AnnCollection([adata1, adata2], join_vars="inner", label="dataset")
    >>> adapter = CollectionAdapter(collection)
    >>> SCVI.setup_anndata(adapter, layer="counts", batch_key="dataset")
    >>> SCVI(adapter).train()
    """

    #: The adapter is an object of its own, never a view of another.
    is_view = False
    #: The data are read into memory through the collection, whatever backs its AnnDatas.
    isbacked = False

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.uns: dict[str, Any] = {}
        # A collection made without join_obsm has no obsm; registrations may still write one.
        self._obsm: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the adapter does not define: obs, obs_names, shape, ...
        if name in ("collection", "_obsm"):
            raise AttributeError(name)
        return getattr(self.collection, name)

    @property
    def __class__(self) -> type:
        # Code that checks for an AnnData (isinstance) accepts the adapter, as in scvi-tools.
        return anndata.AnnData

    @property
    def layers(self) -> _CollectionLayers:
        """The collection's layers, each read as one matrix over all cells."""
        return _CollectionLayers(self.collection)

    @property
    def X(self) -> Matrix:  # noqa: N802 (AnnData's name)
        """The collection's ``X``, read as one matrix over all cells."""
        return self.collection[:].X

    @property
    def obsm(self) -> Mapping[str, Any]:
        """The collection's joined ``obsm``, or the adapter's own when it has none."""
        return self._obsm if self.collection.obsm is None else self.collection.obsm

    @property
    def var(self) -> pd.DataFrame:
        """The shared genes, as an annotation table without columns."""
        return pd.DataFrame(index=self.collection.var_names)

    def __getitem__(self, index: Any) -> Any:
        """A view of the collection (``AnnCollectionView``) at ``index``."""
        return self.collection[index]

    def __len__(self) -> int:
        return len(self.collection)

    def __repr__(self) -> str:
        return f"CollectionAdapter of {self.collection!r}"
