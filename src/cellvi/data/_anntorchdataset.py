"""``AnnTorchDataset``: the registered fields of an AnnData, indexed by minibatches of cells."""

from __future__ import annotations

from collections.abc import KeysView, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from scipy import sparse
from torch.utils.data import Dataset

from cellvi._constants import REGISTRY_KEYS
from cellvi.data._indices import as_cell_indices
from cellvi.data._mudata import AnnOrMuData
from cellvi.data.fields import (
    BaseAnnDataField,
    BaseMuDataWrapperClass,
    CategoricalJointObsField,
    CategoricalObsField,
)
from cellvi.data.fields._base import ON_DISK

if TYPE_CHECKING:
    from cellvi.data._manager import AnnDataManager

_CATEGORICAL_FIELDS = (CategoricalObsField, CategoricalJointObsField)
# Keys scvi-tools serves as integers whatever field registers them (codes and cell indices).
_INTEGER_KEYS = {
    REGISTRY_KEYS.BATCH_KEY,
    REGISTRY_KEYS.LABELS_KEY,
    REGISTRY_KEYS.CAT_COVS_KEY,
    REGISTRY_KEYS.INDICES_KEY,
}

HostArray = np.ndarray | sparse.csr_matrix | sparse.csr_array | Any
# Rows of a file this close are read in one slice: reading the gap costs less than a new read.
_MAX_GAP = 32


class AnnTorchDataset(Dataset):
    """The registered data of an ``AnnDataManager``, indexed by minibatches of cells.

    ``dataset[indices]`` gives ``{registry_key: array}`` for the cells ``indices`` (an int, a
    slice, or positions in any order, repeats allowed), each array with one row per cell:
    numpy arrays (data loaders make them tensors), or torch sparse CSR tensors for fields
    stored sparse when ``load_sparse_tensor`` is set.

    Every served field is read at construction. Sparse matrices stay sparse on the host (CSC
    is converted to CSR once, since minibatches take rows) and only a minibatch's rows are
    densified. A backed AnnData's matrix stays in its file: each minibatch reads its rows there.

    Parameters
    ----------
    adata_manager
        Manager holding the registered AnnData.
    getitem_tensors
        Registry keys to serve (a list), or registry keys mapped to the numpy dtype to serve
        them as (a dict). ``None`` serves every non-empty field with its default dtype:
        int64 for categorical codes and cell indices, float32 for everything else.
    load_sparse_tensor
        Serve fields stored sparse as torch sparse tensors of their layout (CSR or CSC)
        instead of dense arrays.
        Fields stored dense stay dense.

    Examples
    --------
    >>> dataset = AnnTorchDataset(adata_manager)
    >>> batch = dataset[np.array([0, 5, 7])]
    >>> batch["X"].shape, batch["batch"].dtype
    ((3, n_vars), dtype('int64'))
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        getitem_tensors: Sequence[str] | Mapping[str, npt.DTypeLike] | None = None,
        load_sparse_tensor: bool = False,
    ) -> None:
        # A local reference keeps the (weakly held) AnnData alive while its fields are read.
        adata = held_adata(adata_manager)
        self.adata_manager = adata_manager
        self.n_obs = int(adata.n_obs)
        self.load_sparse_tensor = load_sparse_tensor
        self.keys_and_dtypes = _select_keys(adata_manager, getitem_tensors)
        stored = {key: adata_manager.get_from_registry(key) for key in self.keys_and_dtypes}
        # CSC fields are held as CSR (minibatches take rows) but served in their own layout.
        self.csc_keys = {
            key for key, data in stored.items() if sparse.issparse(data) and data.format == "csc"
        }
        self.data: dict[str, HostArray] = {
            key: _to_host_array(data, self.n_obs, key) for key, data in stored.items()
        }

    @property
    def registered_keys(self) -> KeysView[str]:
        """Registry keys of every non-empty registered field (served or not)."""
        return self.adata_manager.data_registry.keys()

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes receive the arrays only: the manager refers to its AnnData weakly,
        # which cannot be pickled, and a worker needs nothing else.
        return {**self.__dict__, "adata_manager": None}

    def __len__(self) -> int:
        return self.n_obs

    def __getitem__(
        self, indices: int | slice | npt.ArrayLike
    ) -> dict[str, np.ndarray | torch.Tensor]:
        """The rows ``indices`` (in the order given) of every served field."""
        if isinstance(indices, slice):
            rows = np.arange(self.n_obs)[indices]
        else:
            rows = as_cell_indices(np.atleast_1d(indices), self.n_obs)
        return self.served(self.stored_rows(rows))

    @property
    def on_disk(self) -> bool:
        """Whether a served field is read from a file (a backed or zarr-backed matrix)."""
        return any(isinstance(data, ON_DISK) for data in self.data.values())

    def stored_rows(self, rows: np.ndarray) -> dict[str, HostArray]:
        """The rows ``rows`` (in that order) of every served field, as stored.

        Sparse fields stay sparse and keep their dtype, so that a block of many minibatches
        (the out-of-core loaders' buffer) costs what the file holds; :meth:`served` turns a
        selection of these rows into a minibatch.
        """
        stored = {}
        for key in self.keys_and_dtypes:
            data = self.data[key]
            stored[key] = _read_rows(data, rows) if isinstance(data, ON_DISK) else data[rows]
        return stored

    def served(self, stored: Mapping[str, HostArray]) -> dict[str, np.ndarray | torch.Tensor]:
        """Rows read by :meth:`stored_rows` as a minibatch: served dtypes, dense or sparse."""
        return {
            key: self._served(key, stored[key], dtype)
            for key, dtype in self.keys_and_dtypes.items()
        }

    def _served(self, key: str, block: HostArray, dtype: np.dtype) -> np.ndarray | torch.Tensor:
        if not sparse.issparse(block):
            return np.ascontiguousarray(block, dtype=dtype)
        block = block.astype(dtype, copy=False)
        if not self.load_sparse_tensor:
            return block.toarray()
        block = sparse.csr_matrix(block)
        return _to_torch_sparse(block.tocsc() if key in self.csc_keys else block)


def held_adata(adata_manager: AnnDataManager) -> AnnOrMuData:
    """The manager's AnnData; a ``ValueError`` when it holds none (yet, or any more)."""
    adata = adata_manager.adata
    if adata is None:
        raise ValueError(
            "The AnnDataManager holds no AnnData: register one first, and keep a reference "
            "to it (the manager refers to it weakly)."
        )
    return adata


def reads_from_disk(adata_manager: AnnDataManager) -> bool:
    """Whether a registered field is a matrix read from a file (backed h5ad, zarr)."""
    return any(
        isinstance(adata_manager.get_from_registry(key), ON_DISK)
        for key in adata_manager.data_registry
    )


def default_dtype(field: BaseAnnDataField) -> np.dtype:
    """The dtype a field is served as: int64 for codes and cell indices, float32 otherwise."""
    inner = field.adata_field if isinstance(field, BaseMuDataWrapperClass) else field
    if isinstance(inner, _CATEGORICAL_FIELDS) or field.registry_key in _INTEGER_KEYS:
        return np.dtype(np.int64)
    return np.dtype(np.float32)


def _select_keys(
    adata_manager: AnnDataManager,
    getitem_tensors: Sequence[str] | Mapping[str, npt.DTypeLike] | None,
) -> dict[str, np.dtype]:
    registered = adata_manager.data_registry
    defaults = {
        field.registry_key: default_dtype(field)
        for field in adata_manager.fields
        # A field of adata.uns holds one value, not one per cell: nothing to serve.
        if field.registry_key in registered and field.attr_name != "uns"
    }
    if getitem_tensors is None:
        return defaults
    if isinstance(getitem_tensors, Mapping):
        requested = {key: np.dtype(dtype) for key, dtype in getitem_tensors.items()}
    elif isinstance(getitem_tensors, Sequence) and not isinstance(getitem_tensors, str):
        requested = {key: defaults.get(key) for key in getitem_tensors}
    else:
        raise ValueError(
            "getitem_tensors must be a list of registry keys, a dict of registry keys to dtypes, "
            f"or None; got {type(getitem_tensors).__name__}."
        )
    unknown = [key for key in requested if key not in defaults]
    if unknown:
        raise KeyError(
            f"{unknown} hold no registered data (not in the data registry); "
            f"available: {list(defaults)}."
        )
    return requested


def _to_host_array(data: object, n_obs: int, key: str) -> HostArray:
    if isinstance(data, ON_DISK):
        array = data
    elif sparse.issparse(data):
        array = data if data.format == "csr" else data.tocsr()
    else:
        array = data.to_numpy() if isinstance(data, pd.DataFrame) else np.asarray(data)
        if array.ndim == 1:
            array = array.reshape(-1, 1)
    if len(array.shape) != 2 or array.shape[0] != n_obs:
        raise ValueError(
            f"Registered field {key!r} has shape {array.shape}; expected {n_obs} rows "
            "(one per cell)."
        )
    return array


def _read_rows(data: HostArray, rows: np.ndarray) -> np.ndarray | sparse.csr_matrix:
    """Rows of an on-disk matrix, in the order asked: the file is read in increasing order.

    Runs of nearby rows are read as one slice each (one contiguous read, the rows between
    them dropped afterwards): block-shuffled and in-order reads then cost a few large reads
    instead of one small read per row.
    """
    unique, order = np.unique(rows, return_inverse=True)
    if unique.size == 0:
        return data[unique]
    breaks = np.flatnonzero(np.diff(unique) > _MAX_GAP) + 1
    starts = unique[np.r_[0, breaks]]
    stops = unique[np.r_[breaks - 1, unique.size - 1]] + 1
    pieces = [data[int(start) : int(stop)] for start, stop in zip(starts, stops, strict=True)]
    run = np.repeat(np.arange(starts.size), np.diff(np.r_[0, breaks, unique.size]))
    offsets = np.r_[0, np.cumsum(stops - starts)[:-1]]
    block = _stacked(pieces)[unique - starts[run] + offsets[run]]
    return block[order] if unique.size != rows.size or (unique != rows).any() else block


def _stacked(pieces: list[HostArray]) -> HostArray:
    """Blocks of rows one under the other (sparse stays sparse, as CSR)."""
    if len(pieces) == 1:
        return pieces[0]
    if sparse.issparse(pieces[0]):
        return sparse.vstack(pieces, format="csr")
    return np.concatenate(pieces)


def _to_torch_sparse(block: sparse.csr_matrix | sparse.csc_matrix) -> torch.Tensor:
    """A torch sparse tensor with the layout of ``block`` (CSR or CSC)."""
    if not block.has_canonical_format:
        block = block.copy()
        block.sum_duplicates()  # also sorts the indices, which torch kernels expect
    build = torch.sparse_csc_tensor if block.format == "csc" else torch.sparse_csr_tensor
    return build(
        torch.from_numpy(block.indptr.astype(np.int64)),
        torch.from_numpy(block.indices.astype(np.int64)),
        torch.from_numpy(block.data),
        size=block.shape,
        # Canonical scipy blocks already satisfy the invariants.
        check_invariants=False,
    )
