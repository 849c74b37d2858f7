"""``AnnTorchDataset``: the registered fields of an AnnData, read once and served as tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import torch
from scipy import sparse
from torch.utils.data import Dataset

from cellvi.data import AnnDataManager
from cellvi.data.fields import CategoricalJointObsField, CategoricalObsField
from cellvi.dataloaders._indices import as_cell_indices

_CATEGORICAL_FIELDS = (CategoricalObsField, CategoricalJointObsField)

HostArray = np.ndarray | sparse.csr_matrix | sparse.csr_array


class AnnTorchDataset(Dataset):
    """The registered data of an ``AnnDataManager``, indexed by minibatches of cells.

    Every non-empty registered field is read once at construction. Sparse matrices are kept
    sparse on the host (CSC is converted to CSR once, since minibatches take rows) and only the
    rows of a minibatch are densified.

    Parameters
    ----------
    adata_manager
        Manager holding the registered AnnData.
    data_and_attributes
        Registry keys to serve (a list), or registry keys mapped to the numpy dtype to serve
        them as (a dict). ``None`` serves every non-empty field with its default dtype:
        int64 for categorical fields, float32 for everything else.
    load_sparse_tensor
        Serve fields stored sparse as torch sparse tensors of their layout (CSR or CSC)
        instead of dense ones. Fields stored dense stay dense.

    Examples
    --------
    >>> dataset = AnnTorchDataset(adata_manager)
    >>> batch = dataset[np.array([0, 5, 7])]
    >>> batch["X"].shape, batch["batch"].dtype
    (torch.Size([3, n_vars]), torch.int64)
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        data_and_attributes: Sequence[str] | Mapping[str, npt.DTypeLike] | None = None,
        load_sparse_tensor: bool = False,
    ) -> None:
        # A local reference keeps the (weakly held) AnnData alive while its fields are read.
        adata = adata_manager.adata
        if adata is None:
            raise ValueError(
                "The AnnDataManager holds no AnnData: register one first, and keep a reference "
                "to it (the manager refers to it weakly)."
            )
        self.n_obs = int(adata.n_obs)
        self.load_sparse_tensor = load_sparse_tensor
        self.keys_and_dtypes = _select_keys(adata_manager, data_and_attributes)
        stored = {key: adata_manager.get_from_registry(key) for key in self.keys_and_dtypes}
        # CSC fields are held as CSR (minibatches take rows) but served in their own layout.
        self.csc_keys = {key for key, data in stored.items() if _is_csc(data)}
        # Only arrays are kept (not the manager): workers then receive just what they serve.
        self.data: dict[str, HostArray] = {
            key: _to_host_array(data, self.n_obs, key) for key, data in stored.items()
        }

    def __len__(self) -> int:
        return self.n_obs

    def __getitem__(self, indices: int | slice | npt.ArrayLike) -> dict[str, torch.Tensor]:
        """The rows ``indices`` (in the order given) of every served field, as tensors."""
        if isinstance(indices, slice):
            rows = np.arange(self.n_obs)[indices]
        else:
            rows = as_cell_indices(np.atleast_1d(indices), self.n_obs)
        return {key: self._take(key, rows, dtype) for key, dtype in self.keys_and_dtypes.items()}

    def _take(self, key: str, rows: np.ndarray, dtype: np.dtype) -> torch.Tensor:
        data = self.data[key]
        if not sparse.issparse(data):
            return torch.from_numpy(np.ascontiguousarray(data[rows], dtype=dtype))
        block = data[rows].astype(dtype, copy=False)
        if not self.load_sparse_tensor:
            return torch.from_numpy(block.toarray())
        return _to_torch_sparse(block.tocsc() if key in self.csc_keys else block)


def default_dtypes(adata_manager: AnnDataManager) -> dict[str, np.dtype]:
    """The dtype each non-empty field is served as: int64 codes, float32 values."""
    registered = adata_manager.data_registry
    return {
        field.registry_key: np.dtype(
            np.int64 if isinstance(field, _CATEGORICAL_FIELDS) else np.float32
        )
        for field in adata_manager.fields
        if field.registry_key in registered
    }


def _select_keys(
    adata_manager: AnnDataManager,
    data_and_attributes: Sequence[str] | Mapping[str, npt.DTypeLike] | None,
) -> dict[str, np.dtype]:
    defaults = default_dtypes(adata_manager)
    if data_and_attributes is None:
        return defaults
    if isinstance(data_and_attributes, str):
        raise TypeError("data_and_attributes must be a list of registry keys, not a string.")
    requested = list(data_and_attributes)
    unknown = [key for key in requested if key not in defaults]
    if unknown:
        raise KeyError(
            f"data_and_attributes names {unknown}, which hold no registered data; "
            f"available: {list(defaults)}."
        )
    if isinstance(data_and_attributes, Mapping):
        return {key: np.dtype(dtype) for key, dtype in data_and_attributes.items()}
    return {key: defaults[key] for key in requested}


def _to_host_array(data: object, n_obs: int, key: str) -> HostArray:
    if sparse.issparse(data):
        array = data if data.format == "csr" else data.tocsr()
    else:
        array = np.asarray(data)
        if array.ndim == 1:
            array = array.reshape(-1, 1)
    if array.ndim != 2 or array.shape[0] != n_obs:
        raise ValueError(
            f"Registered field {key!r} has shape {array.shape}; expected {n_obs} rows "
            "(one per cell)."
        )
    return array


def _is_csc(data: object) -> bool:
    return sparse.issparse(data) and data.format == "csc"


def _to_torch_sparse(
    block: sparse.csr_matrix | sparse.csr_array | sparse.csc_matrix | sparse.csc_array,
) -> torch.Tensor:
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
