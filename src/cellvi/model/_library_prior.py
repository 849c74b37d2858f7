"""Per-batch log-normal prior of library sizes, estimated from the registered counts."""

from __future__ import annotations

import numpy as np

from cellvi.data import REGISTRY_KEYS, AnnDataManager


def library_size_prior(
    adata_manager: AnnDataManager, n_batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``log(total counts)`` in each batch, as (1, n_batch) arrays."""
    counts = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    totals = np.asarray(counts.sum(axis=1)).ravel()
    if (totals <= 0).any():
        raise ValueError(
            f"{int((totals <= 0).sum())} cells have no counts; their log library size is "
            "undefined. Filter them out (e.g. sc.pp.filter_cells(adata, min_counts=1))."
        )
    log_totals = np.log(totals)
    batch = adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY).ravel()
    means = np.zeros((1, n_batch), dtype=np.float32)
    variances = np.ones((1, n_batch), dtype=np.float32)
    for code in range(n_batch):
        in_batch = log_totals[batch == code]
        if in_batch.size:
            means[0, code] = in_batch.mean()
            # A batch of one cell (or identical sizes) would give a zero-width prior.
            variances[0, code] = max(in_batch.var(), 1e-3)
    return means, variances
