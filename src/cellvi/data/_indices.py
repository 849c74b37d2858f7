"""Turning user-given cell selections (masks or integer positions) into checked index arrays."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def as_cell_indices(
    indices: npt.ArrayLike | None, n_cells: int, what: str = "indices"
) -> np.ndarray:
    """Check a selection of cells and return it as a 1-D int64 array of row positions.

    Parameters
    ----------
    indices
        ``None`` (every cell, in order), a boolean mask of length ``n_cells``, or integer
        positions in ``[0, n_cells)``. Repeats are kept: a caller may oversample cells.
    n_cells
        Number of cells the positions refer to.
    what
        Name of the selection in error messages.

    Returns
    -------
    The selected row positions, in the order given.
    """
    if indices is None:
        return np.arange(n_cells, dtype=np.int64)
    array = np.asarray(indices)
    if array.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got an array of shape {array.shape}.")
    if array.dtype == bool:
        if array.size != n_cells:
            raise ValueError(
                f"{what} is a boolean mask of length {array.size} but there are {n_cells} cells."
            )
        return np.flatnonzero(array).astype(np.int64)
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{what} must be integer positions or a boolean mask, got dtype {array.dtype}."
        )
    check_in_range(array, n_cells, what)
    return array.astype(np.int64, copy=False)


def check_in_range(array: np.ndarray, n_cells: int, what: str) -> None:
    """Raise a ValueError naming the first position outside ``[0, n_cells)``."""
    outside = (array < 0) | (array >= n_cells)
    if outside.any():
        bad = int(array[np.argmax(outside)])
        raise ValueError(f"{what}: index {bad} is out of range for {n_cells} cells.")
