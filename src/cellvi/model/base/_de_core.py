"""The differential expression driver: which comparisons to run, and the table they give.

``_de_core`` turns the user's ``groupby`` / ``group1`` / ``group2`` or ``idx1`` / ``idx2`` into
pairs of cell masks, runs :class:`DifferentialComputation` on each and assembles scvi-tools'
result table (one row per gene and comparison), with the raw count statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellvi._constants import REGISTRY_KEYS
from cellvi.model.base._differential import DifferentialComputation
from cellvi.utils import track

Selection = Sequence[int] | Sequence[bool] | np.ndarray | str
# Total count every cell is scaled to in ``raw_normalized_mean``.
_RAW_NORMALIZED_TOTAL = 1e4


def _selection_mask(selection: Selection, obs: pd.DataFrame, what: str) -> np.ndarray:
    """A boolean mask over cells from positions, a mask, or a query of ``obs``."""
    n_cells = len(obs)
    if isinstance(selection, str):
        try:
            chosen = obs.query(selection).index
        except Exception as error:  # pandas raises many types for a bad expression
            raise ValueError(
                f"{what}={selection!r} is not a valid query of adata.obs: {error}"
            ) from error
        return obs.index.isin(chosen)
    array = np.asarray(selection).ravel()
    if array.size == 0:
        return np.zeros(n_cells, dtype=bool)
    if array.dtype == bool:
        if array.size != n_cells:
            raise ValueError(
                f"{what} is a boolean mask of length {array.size}, but there are {n_cells} cells."
            )
        return array
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must be cell positions, a boolean mask or a query string.")
    if array.min() < -n_cells or array.max() >= n_cells:
        raise ValueError(f"{what} holds positions outside the {n_cells} cells.")
    mask = np.zeros(n_cells, dtype=bool)
    mask[array] = True
    return mask


def _prepare_obs(
    idx1: Selection, idx2: Selection | None, adata: Any
) -> tuple[np.ndarray, list[str], str | None]:
    """Label the two populations of ``idx1`` / ``idx2``: ``"one"``, ``"two"`` (else ``"None"``).

    Returns the labels of all cells, ``group1`` (``["one"]``) and ``group2`` (``"two"``, or
    None without ``idx2``: the rest of the cells).
    """
    first = _selection_mask(idx1, adata.obs, "idx1")
    if not first.any():
        raise ValueError("idx1 selects no cells.")
    labels = np.full(adata.n_obs, "None", dtype="<U4")
    labels[first] = "one"
    group2 = None
    if idx2 is not None:
        second = _selection_mask(idx2, adata.obs, "idx2")
        if not second.any():
            raise ValueError("idx2 selects no cells.")
        overlap = int((first & second).sum())
        if overlap:
            raise ValueError(
                f"idx1 and idx2 share {overlap} cells; the two populations must be disjoint."
            )
        labels[second] = "two"
        group2 = "two"
    elif first.all():
        raise ValueError("idx1 selects every cell, which leaves no cells to compare with.")
    return labels, ["one"], group2


def _subset_group(subset_idx: Selection, groupby: str, adata: Any) -> pd.Series:
    """``groupby``'s labels (as strings), with cells outside ``subset_idx`` labelled "other"."""
    inside = _selection_mask(subset_idx, adata.obs, "subset_idx")
    labels = adata.obs[groupby].astype(str).copy()
    labels[~inside] = "other"
    return labels


def _de_core(
    adata_manager: Any,
    model_fn: Callable[..., np.ndarray],
    representation_fn: Callable[..., np.ndarray] | None,
    groupby: str | None,
    group1: Any,
    group2: Any,
    idx1: Selection | None,
    idx2: Selection | None,
    all_stats: bool,
    all_stats_fn: Callable[..., dict[str, np.ndarray]],
    col_names: Sequence[str],
    mode: str,
    batchid1: Sequence[Any] | None,
    batchid2: Sequence[Any] | None,
    delta: float | None,
    batch_correction: bool,
    fdr: float,
    silent: bool,
    subset_idx: Selection | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """Run every requested comparison and return scvi-tools' differential expression table."""
    adata = adata_manager.adata
    if mode not in ("vanilla", "change"):
        raise ValueError(f"mode must be 'vanilla' or 'change', got {mode!r}.")
    if idx1 is None and groupby is None:
        raise ValueError(
            "Say which cells to compare: groupby (an adata.obs column, with group1 / group2) "
            "or idx1 (and idx2)."
        )
    if idx1 is None and idx2 is not None:
        raise ValueError("idx2 needs idx1: give the first population too.")
    if idx1 is not None:
        labels, group1, group2 = _prepare_obs(idx1, idx2, adata)
    else:
        labels, group1 = _group_labels(adata, groupby, group1, group2)
        if subset_idx is not None:
            labels = _subset_group(subset_idx, groupby, adata).to_numpy()
            group1 = [str(group) for group in group1]
            group2 = None if group2 is None else str(group2)
    computation = DifferentialComputation(model_fn, representation_fn, adata_manager)
    results = []
    for group in _progress(group1, silent):
        cells1 = np.asarray(labels == group).ravel()
        cells2 = ~cells1 if group2 is None else np.asarray(labels == group2).ravel()
        if idx1 is None and not cells2.any():
            raise ValueError(f"No cells to compare group {group!r} with.")
        info = computation.get_bayes_factors(
            cells1,
            cells2,
            mode=mode,
            delta=delta,
            batchid1=batchid1,
            batchid2=batchid2,
            use_observed_batches=not batch_correction,
            **kwargs,
        )
        if all_stats:
            info = {**info, **all_stats_fn(adata_manager, cells1, cells2)}
        table = pd.DataFrame(info, index=col_names)
        table = table.sort_values(
            by="proba_de" if mode == "change" else "bayes_factor", ascending=False
        )
        if mode == "change":
            table[f"is_de_fdr_{fdr}"] = _fdr_de_prediction(table["proba_de"], fdr=fdr)
        if idx1 is None:
            reference = "Rest" if group2 is None else group2
            table["comparison"] = f"{group} vs {reference}"
            table["group1"] = group
            table["group2"] = reference
        results.append(table)
    return pd.concat(results, axis=0)


def _group_labels(
    adata: Any, groupby: str, group1: Any, group2: Any
) -> tuple[np.ndarray, list[Any]]:
    """The labels of ``groupby`` and the groups to test, checked against its categories."""
    if groupby not in adata.obs:
        raise KeyError(f"groupby={groupby!r} is not a column of adata.obs.")
    column = adata.obs[groupby]
    categories = column.astype("category").cat.categories.tolist()
    if group1 is None:
        if len(categories) < 2:
            raise ValueError(
                f"adata.obs[{groupby!r}] holds a single group ({categories}); differential "
                "expression needs at least two."
            )
        group1 = categories
    elif isinstance(group1, str) or not isinstance(group1, Iterable):
        group1 = [group1]
    group1 = list(group1)
    for group in [*group1, *([] if group2 is None else [group2])]:
        if group not in categories:
            raise ValueError(
                f"Group {group!r} is not in adata.obs[{groupby!r}], whose groups are "
                f"{categories[:20]}."
            )
    if group2 is not None and group2 in group1:
        raise ValueError(f"Group {group2!r} is both group1 and group2.")
    return column.to_numpy(), group1


def _fdr_de_prediction(posterior_probas: pd.Series, fdr: float = 0.05) -> pd.Series:
    """Flag the most probable genes as DE while their posterior expected FDR is <= ``fdr``.

    Taking genes in decreasing ``proba_de``, the expected FDR of the first ``k`` is the mean
    of ``1 - proba_de`` over them; the largest ``k`` with a value at most ``fdr`` is flagged.
    """
    if posterior_probas.ndim != 1:
        raise ValueError("posterior_probas must be 1-dimensional.")
    ordered = posterior_probas.sort_values(ascending=False)
    expected_fdr = np.cumsum(1.0 - ordered.to_numpy()) / np.arange(1, len(ordered) + 1)
    n_de = int((expected_fdr <= fdr).sum())
    flags = pd.Series(np.arange(len(ordered)) < n_de, index=ordered.index)
    return flags.loc[posterior_probas.index]


def scrna_raw_counts_properties(
    adata_manager: Any,
    idx1: np.ndarray,
    idx2: np.ndarray,
    var_idx: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Raw count statistics of two populations, per gene.

    ``raw_mean1`` / ``raw_mean2`` (mean counts), ``non_zeros_proportion1`` / ``2`` (share of
    cells with a count) and ``raw_normalized_mean1`` / ``2`` (mean of the counts scaled to
    1e4 per cell).
    """
    data = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    properties = {}
    for suffix, cells in (("1", idx1), ("2", idx2)):
        cells = np.asarray(cells)
        cells = np.flatnonzero(cells) if cells.dtype == bool else cells
        part = data[cells]
        if var_idx is None and sp.issparse(part) and part.format == "csr":
            mean, nonzero, normalized = _csr_column_means(part)
        else:
            mean, nonzero, normalized = _column_means(part, var_idx)
        properties[f"raw_mean{suffix}"] = mean
        properties[f"non_zeros_proportion{suffix}"] = nonzero
        properties[f"raw_normalized_mean{suffix}"] = normalized
    order = [
        "raw_mean1",
        "raw_mean2",
        "non_zeros_proportion1",
        "non_zeros_proportion2",
        "raw_normalized_mean1",
        "raw_normalized_mean2",
    ]
    return {name: properties[name] for name in order}


def _csr_column_means(part: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-gene mean, share of non-zeros and mean of the 1e4-scaled counts of CSR rows.

    Both means come from one product of the transposed rows with two cell weights, the
    share from the column of each stored non-zero: no boolean or scaled copy of the rows.
    """
    n_cells, n_genes = part.shape
    with np.errstate(divide="ignore"):
        scaling = _RAW_NORMALIZED_TOTAL / np.asarray(part.sum(axis=1)).ravel()
    weights = np.stack([np.ones(n_cells), scaling], axis=1) / n_cells
    means = np.asarray(part.T @ weights)
    dtype = np.result_type(part.dtype, np.float32)
    nonzero = np.bincount(part.indices[part.data != 0], minlength=n_genes) / n_cells
    return means[:, 0].astype(dtype), nonzero, means[:, 1].astype(dtype)


def _column_means(
    part: Any, var_idx: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`_csr_column_means`, for dense or other sparse counts (and a subset of genes)."""
    with np.errstate(divide="ignore"):
        scaling = _RAW_NORMALIZED_TOTAL / np.asarray(part.sum(axis=1)).ravel()
    if var_idx is not None:
        part = part[:, var_idx]
    mean = np.asarray(part.mean(axis=0)).ravel()
    nonzero = np.asarray((part != 0).mean(axis=0)).ravel()
    if sp.issparse(part):
        normalized = sp.diags(scaling) @ part
    else:
        normalized = part * scaling[:, None]
    return mean, nonzero, np.asarray(normalized.mean(axis=0)).ravel()


def _progress(groups: list[Any], silent: bool) -> Iterable[Any]:
    if silent or len(groups) < 2:
        return groups
    return track(groups, "DE...")
