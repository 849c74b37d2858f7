"""Checks that a matrix holds what a count likelihood can score."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import numpy as np
from scipy import sparse

from cellvi.data.fields._base import ON_DISK, FieldData

logger = logging.getLogger("cellvi")

# Checking in row chunks bounds the temporary memory on large dense matrices.
_CHUNK_ROWS = 20_000


def _stored_values(data: FieldData) -> Iterator[np.ndarray]:
    """The explicitly stored values of a matrix, in chunks (sparse zeros need no checks).

    A backed matrix is read from its file a block of rows at a time, never whole.
    """
    if sparse.issparse(data):
        yield np.asarray(data.data)
        return
    if hasattr(data, "to_memory") and not isinstance(data, ON_DISK):  # other lazy arrays
        data = data.to_memory()
    array = data if isinstance(data, ON_DISK) else np.asarray(data)
    for start in range(0, array.shape[0], _CHUNK_ROWS):
        block = array[start : start + _CHUNK_ROWS]
        yield np.asarray(block.data if sparse.issparse(block) else block)


def check_numeric_finite(data: FieldData, where: str) -> None:
    """Raise a ValueError when ``data`` is not numeric or holds NaN or infinite values."""
    for chunk in _stored_values(data):
        is_real = np.issubdtype(chunk.dtype, np.number) or np.issubdtype(chunk.dtype, np.bool_)
        if not is_real or np.issubdtype(chunk.dtype, np.complexfloating):
            raise ValueError(f"{where} must be numeric (real), got dtype {chunk.dtype}.")
        if np.issubdtype(chunk.dtype, np.floating) and not np.isfinite(chunk).all():
            n_nan = int(np.isnan(chunk).sum())
            raise ValueError(
                f"{where} holds NaN or infinite values ({n_nan} NaN in the first offending "
                "block). Remove or impute them before setup_anndata."
            )


def check_count_data(data: FieldData, where: str) -> None:
    """Validate raw counts: errors for NaN, Inf or negatives, a warning for non-integers.

    Count likelihoods (NB, ZINB, Poisson) are only defined on non-negative integers; a
    non-integer matrix is usually normalised or log-transformed data passed by mistake, but
    some pipelines produce fractional pseudo-counts (e.g. ambient-RNA correction), so that
    case warns instead of failing.
    """
    check_numeric_finite(data, where)
    has_fraction = False
    for chunk in _stored_values(data):
        if (chunk < 0).any():
            raise ValueError(
                f"{where} holds negative values, but a count likelihood needs raw counts >= 0. "
                "Pass the raw counts (e.g. layer='counts'), not normalised or scaled data."
            )
        if not has_fraction and np.issubdtype(chunk.dtype, np.floating):
            has_fraction = bool((chunk != np.round(chunk)).any())
    if has_fraction:
        warnings.warn(
            f"{where} holds non-integer values; count likelihoods expect raw integer counts. "
            "If this is normalised or log-transformed data, pass the raw counts instead "
            "(e.g. layer='counts').",
            UserWarning,
            stacklevel=4,
        )
