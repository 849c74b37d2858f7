"""The genes of a query for reference mapping: checked against the reference's, or made so."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

logger = logging.getLogger("cellvi")

#: Below this share of the reference genes in a query, mapping is warned to be unreliable.
MIN_VAR_NAME_RATIO = 0.8


def validate_var_names(adata: AnnData, var_names: np.ndarray, model_name: str) -> None:
    """Refuse a query whose genes are not exactly the reference's, in its order."""
    query = np.asarray(adata.var_names, dtype=str)
    if query.shape == var_names.shape and (query == var_names).all():
        return
    shared = len(pd.Index(var_names).intersection(adata.var_names))
    raise ValueError(
        f"The query's genes are not the reference's ({shared} of the reference's "
        f"{len(var_names)} genes found, {adata.n_vars} in the query). Run "
        f"{model_name}.prepare_query_anndata(adata, reference) first (pads, reorders and "
        "drops genes), or pass inplace_subset_query_vars=True when every reference gene is "
        "there."
    )


def pad_and_sort_query_anndata(adata: AnnData, reference: pd.Index) -> AnnData:
    """``adata`` with exactly the reference's genes, in order: missing ones all zeros.

    Returns ``adata`` itself when its genes are the reference's already. ``raw`` is kept as it
    is; gene-wise ``varm`` and ``varp`` are dropped when genes are padded.
    """
    shared = adata.var_names.intersection(reference)
    if len(shared) == 0:
        raise ValueError(
            "The query shares no gene with the reference. Check that both use the same gene "
            "identifiers (prepare_query_anndata(..., return_reference_var_names=True) lists "
            "the reference's)."
        )
    ratio = len(shared) / len(reference)
    missing = reference.difference(adata.var_names)
    n_dropped = adata.n_vars - len(shared)
    logger.info(
        "Query genes: %d of the reference's %d found (%.1f%%), %d padded with zeros, %d not in "
        "the reference dropped.",
        len(shared),
        len(reference),
        100 * ratio,
        len(missing),
        n_dropped,
    )
    if ratio < MIN_VAR_NAME_RATIO:
        warnings.warn(
            f"The query holds only {ratio:.0%} of the reference's genes (less than "
            f"{MIN_VAR_NAME_RATIO:.0%}); the mapping may be poor.",
            UserWarning,
            stacklevel=3,
        )
    if reference.equals(adata.var_names):
        return adata
    if not len(missing):
        return adata[:, reference].copy()
    positions = adata.var_names.get_indexer(reference)
    return AnnData(
        X=_padded(adata.X, positions),
        obs=adata.obs.copy(),
        var=adata.var.reindex(reference),
        uns=dict(adata.uns),
        obsm=dict(adata.obsm),
        obsp=dict(adata.obsp),
        layers={name: _padded(matrix, positions) for name, matrix in adata.layers.items()},
        raw=None if adata.raw is None else adata.raw.to_adata(),
    )


def _padded(matrix: Any, positions: np.ndarray) -> Any:
    """The columns ``positions`` of ``matrix``, a zero column wherever a position is -1."""
    if matrix is None:
        return None
    present = positions >= 0
    if sp.issparse(matrix):
        csc = sp.csc_matrix(matrix)
        # Column -1 of the stacked matrix is an empty one, so missing genes read zero.
        stacked = sp.hstack([csc, sp.csc_matrix((csc.shape[0], 1), dtype=csc.dtype)], "csc")
        padded = stacked[:, np.where(present, positions, csc.shape[1])]
        return type(matrix)(padded) if sp.isspmatrix(matrix) else sp.csr_matrix(padded)
    dense = np.asarray(matrix)
    padded = np.zeros((dense.shape[0], len(positions)), dtype=dense.dtype)
    padded[:, present] = dense[:, positions[present]]
    return padded
