"""Checking user-given ``[train, validation, test]`` index arrays for ``DataSplitter``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellvi.data._indices import check_in_range

SPLIT_NAMES = ("train", "valid", "test")


class ExternalIndexingError(ValueError, UserWarning):
    """Duplicated or missing cells in ``external_indexing``.

    scvi-tools raises these two problems as a bare ``Warning``; this error is both a
    ``ValueError`` (like cellvi's other refusals) and a ``Warning``, so code written for
    either library catches it.
    """


def validate_external_indexing(
    external_indexing: Sequence[np.ndarray | None], n_cells: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check ``[train, validation, test]`` cell indices and return them as int64 arrays.

    Parameters
    ----------
    external_indexing
        A list (or tuple) of up to three 1-D integer numpy arrays, in the order train,
        validation, test. Missing trailing entries, ``None`` and ``np.array(None)`` are empty
        splits. Together the splits must cover every cell exactly once, and train must have
        cells.
    n_cells
        Number of registered cells.

    Returns
    -------
    The train, validation and test indices, in the order given.

    Raises
    ------
    ExternalIndexingError
        A split repeats a cell, or some cell is in no split.
    ValueError
        Anything else: not a list, more than three entries, an entry that is not a 1-D integer
        numpy array, an index out of range, a cell in two splits, an empty train split.
    """
    if not isinstance(external_indexing, list | tuple):
        raise ValueError("External indexing is not of list type")
    if len(external_indexing) > 3:
        raise ValueError(
            "external_indexing holds at most 3 index arrays [train, validation, test], got "
            f"{len(external_indexing)} entries."
        )
    entries = list(external_indexing) + [None] * (3 - len(external_indexing))
    splits = tuple(
        _as_split(entry, name, n_cells) for entry, name in zip(entries, SPLIT_NAMES, strict=True)
    )
    for name, split in zip(SPLIT_NAMES, splits, strict=True):
        if np.unique(split).size < split.size:
            raise ExternalIndexingError(f"There are duplicate indexing in {name} set")
    if np.unique(np.concatenate(splits)).size < n_cells:
        raise ExternalIndexingError("There are missing indices please fix or remove those lines")
    for first, second in ((0, 1), (0, 2), (2, 1)):
        if np.intersect1d(splits[first], splits[second]).size:
            raise ValueError(
                f"There are overlapping indexing between {SPLIT_NAMES[first]} and "
                f"{SPLIT_NAMES[second]} sets"
            )
    if splits[0].size == 0:
        raise ValueError("external_indexing: the train indices are empty; train needs cells.")
    return splits


def _as_split(entry: np.ndarray | None, name: str, n_cells: int) -> np.ndarray:
    # ``np.array(None)`` is how scvi-tools' documentation spells a missing split.
    if entry is None or (
        isinstance(entry, np.ndarray) and entry.dtype == object and entry.ndim == 0
    ):
        return np.empty(0, dtype=np.int64)
    if not isinstance(entry, np.ndarray):
        raise ValueError("One of the given external indexing arrays is not a np.array")
    if entry.ndim != 1:
        raise ValueError(
            f"external_indexing: the {name} indices must be a 1-D array, got shape {entry.shape}."
        )
    if entry.size == 0:
        return np.empty(0, dtype=np.int64)
    if entry.dtype == bool or not np.issubdtype(entry.dtype, np.integer):
        raise ValueError(
            f"external_indexing: the {name} indices must be integers, got dtype {entry.dtype}."
        )
    check_in_range(entry, n_cells, f"external_indexing ({name})")
    return entry.astype(np.int64, copy=False)
