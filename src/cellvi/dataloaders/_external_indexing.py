"""Checking user-given ``[train, validation, test]`` index arrays for ``DataSplitter``."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import numpy.typing as npt

from cellvi.data._indices import check_in_range

SPLIT_NAMES = ("train", "validation", "test")


def validate_external_indexing(
    external_indexing: Sequence[npt.ArrayLike | None], n_cells: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check ``[train, validation, test]`` cell indices and return them as int64 arrays.

    Parameters
    ----------
    external_indexing
        A list or tuple of three 1-D integer arrays. Train must be non-empty; validation
        and test may be ``None`` or empty (``np.array(None)`` counts as ``None``).
    n_cells
        Number of registered cells.

    Returns
    -------
    The train, validation and test indices (empty arrays for missing splits).

    Raises
    ------
    ValueError
        Naming the problem: wrong container or length, a non-integer or non-1-D entry, an
        index out of ``[0, n_cells)``, duplicates within a split or shared between splits,
        or an empty train split.
    """
    if not isinstance(external_indexing, list | tuple) or len(external_indexing) != 3:
        found = (
            f"{len(external_indexing)} entries"
            if isinstance(external_indexing, list | tuple)
            else type(external_indexing).__name__
        )
        raise ValueError(
            "external_indexing must be a list of 3 index arrays [train, validation, test] "
            f"(validation and test may be None), got {found}."
        )
    splits = tuple(
        _as_split(entry, name, n_cells)
        for entry, name in zip(external_indexing, SPLIT_NAMES, strict=True)
    )
    if splits[0].size == 0:
        raise ValueError("external_indexing: the train indices are empty; train needs cells.")
    for (first, a), (second, b) in combinations(zip(SPLIT_NAMES, splits, strict=True), 2):
        shared = np.intersect1d(a, b)
        if shared.size:
            raise ValueError(
                f"external_indexing: indices {_preview(shared)} appear in both {first} and "
                f"{second}; the splits must be disjoint."
            )
    return splits


def _as_split(entry: npt.ArrayLike | None, name: str, n_cells: int) -> np.ndarray:
    array = None if entry is None else np.asarray(entry)
    # ``np.array(None)`` is how the scvi-tools docs spell a missing split.
    if array is None or (array.dtype == object and array.ndim == 0 and array.item() is None):
        return np.empty(0, dtype=np.int64)
    if array.ndim != 1:
        raise ValueError(
            f"external_indexing: the {name} indices must be a 1-D array, got shape {array.shape}."
        )
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"external_indexing: the {name} indices must be integers, got dtype {array.dtype}."
        )
    check_in_range(array, n_cells, f"external_indexing ({name})")
    unique, counts = np.unique(array, return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"external_indexing: the {name} indices contain duplicates: "
            f"{_preview(unique[counts > 1])}."
        )
    return array.astype(np.int64, copy=False)


def _preview(values: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return f"[{shown}{', ...' if values.size > limit else ''}]"
