"""``write_in_chunks``: a per-cell query written to disk a chunk of cells at a time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from anndata import AnnData

from cellvi._checks import check_positive_int

# Cells per query call: big enough for full minibatches, small enough for any host.
_CHUNK_CELLS = 65_536


def write_in_chunks(
    query: Callable[..., Any],
    out: str | Path | Any,
    adata: AnnData | None = None,
    indices: np.ndarray | None = None,
    chunk_size: int = _CHUNK_CELLS,
    name: str = "X",
    **query_kwargs: Any,
) -> Any:
    """Run a per-cell query (one row per cell) chunk by chunk and write each chunk to ``out``.

    The result of a query over millions of cells need never be whole in memory: each chunk
    of ``chunk_size`` cells is queried (its minibatches stream from the file when ``adata``
    is backed or zarr-backed) and written before the next one is read.

    Parameters
    ----------
    query
        A model's query returning one row per cell, such as
        ``model.get_latent_representation`` or ``model.get_normalized_expression`` (a
        DataFrame result is written as its values).
    out
        Where to write: an array with ``__setitem__`` and the result's shape (an
        ``h5py.Dataset``, a ``zarr.Array``, a ``numpy.memmap``), or a path: ``*.zarr``
        makes a zarr array there, anything else an HDF5 file holding the dataset ``name``.
    adata
        The cells to query (default: the model's training data).
    indices
        Cells of ``adata`` to query, in the order written; default all.
    chunk_size
        Cells per query call.
    name
        Dataset name inside an HDF5 file ``out``.
    **query_kwargs
        Further arguments of ``query`` (``batch_size``, ``n_samples``, ...).

    Returns
    -------
    The array written (``out`` itself when it is an array).
    """
    check_positive_int("chunk_size", chunk_size)
    if indices is None:
        n_obs = _n_obs(query, adata)
        indices = np.arange(n_obs)
    indices = np.asarray(indices, dtype=np.int64)
    target = None if isinstance(out, str | Path) else out
    for start in range(0, indices.size, chunk_size):
        chunk = indices[start : start + chunk_size]
        rows = query(adata=adata, indices=chunk, **query_kwargs)
        rows = rows.to_numpy() if isinstance(rows, pd.DataFrame) else np.asarray(rows)
        if target is None:
            target = _created(Path(out), name, (indices.size, *rows.shape[1:]), rows.dtype)
        target[start : start + chunk.size] = rows
    return target


def _n_obs(query: Callable[..., Any], adata: AnnData | None) -> int:
    if adata is not None:
        return int(adata.n_obs)
    model = getattr(query, "__self__", None)
    if model is None or getattr(model, "adata", None) is None:
        raise ValueError("Pass adata (or indices): the query's model holds no AnnData.")
    return int(model.adata.n_obs)


def _created(path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> Any:
    """An on-disk array of ``shape`` at ``path``: zarr for ``*.zarr``, else HDF5."""
    rows_per_chunk = max(1, min(shape[0], 2**20 // max(int(np.prod(shape[1:])), 1)))
    chunks = (rows_per_chunk, *shape[1:])
    if path.suffix == ".zarr":
        import zarr

        return zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype=dtype)
    file = h5py.File(path, "a")
    if name in file:
        del file[name]
    return file.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)
