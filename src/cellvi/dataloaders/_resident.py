"""Registered data held as tensors on the training device, and minibatches gathered there."""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from cellvi.data import AnnTorchDataset


class ResidentCSR:
    """A CSR matrix on a device that returns dense rows without leaving the device.

    Rows are gathered through a padded (rows x widest row) index grid, so that the minibatch
    size never depends on the data (a data-dependent size would force a device-to-host sync).
    """

    def __init__(
        self,
        matrix: sparse.csr_matrix | sparse.csr_array,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.n_cols = int(matrix.shape[1])
        row_lengths = np.diff(matrix.indptr)
        self.row_pointers = torch.as_tensor(matrix.indptr.astype(np.int64), device=device)
        # Column indices keep their stored width (usually int32) to halve their footprint.
        self.columns = torch.as_tensor(matrix.indices, device=device)
        self.values = torch.as_tensor(matrix.data, device=device).to(dtype)
        self.offsets = torch.arange(int(row_lengths.max(initial=0)), device=device)

    def dense_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The dense ``(len(rows), n_cols)`` block of the given rows, in that order."""
        starts = self.row_pointers[rows]
        lengths = self.row_pointers[rows + 1] - starts
        present = self.offsets[None, :] < lengths[:, None]
        positions = torch.where(present, starts[:, None] + self.offsets[None, :], 0)
        values = torch.where(present, self.values[positions], 0)
        block = torch.zeros(
            len(rows), self.n_cols, dtype=self.values.dtype, device=self.values.device
        )
        # Padding slots add a zero to a valid column, which leaves the block unchanged.
        return block.scatter_add_(1, self.columns[positions].long(), values)

    @staticmethod
    def nbytes(matrix: sparse.csr_matrix | sparse.csr_array) -> int:
        """Device memory the matrix will take (values, column indices, row pointers)."""
        return int(matrix.data.size * 4 + matrix.indices.nbytes + matrix.indptr.size * 8)


class ResidentTensors:
    """Every served field of a dataset, moved once to ``device``.

    Parameters
    ----------
    dataset
        The host dataset whose fields (and dtypes) to hold.
    device
        Where to hold them; on the CPU dense fields and sparse values share the host memory
        when their dtype already matches.
    """

    def __init__(self, dataset: AnnTorchDataset, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.n_obs = dataset.n_obs
        self.fields: dict[str, torch.Tensor | ResidentCSR] = {}
        self.released = False
        for key, dtype in dataset.keys_and_dtypes.items():
            data = dataset.data[key]
            torch_dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
            if sparse.issparse(data):
                self.fields[key] = ResidentCSR(data, torch_dtype, self.device)
            else:
                self.fields[key] = torch.as_tensor(
                    np.ascontiguousarray(data, dtype=dtype), device=self.device
                )

    @staticmethod
    def nbytes(dataset: AnnTorchDataset) -> int:
        """Device memory the dataset's fields will take once resident."""
        return sum(
            ResidentCSR.nbytes(data) if sparse.issparse(data) else int(np.asarray(data).size * 8)
            for data in dataset.data.values()
        )

    def release(self) -> None:
        """Drop the device copies, so their memory is freed even while loaders refer to this."""
        self.fields = {}
        self.released = True

    def take(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The minibatch of cells ``rows`` (a device tensor of indices)."""
        if self.released:
            raise RuntimeError(
                "The device-resident copy of the training data was released when training "
                "ended; make a new loader (e.g. model.train() again) to read the data."
            )
        return {
            key: field.dense_rows(rows)
            if isinstance(field, ResidentCSR)
            else field.index_select(0, rows)
            for key, field in self.fields.items()
        }
