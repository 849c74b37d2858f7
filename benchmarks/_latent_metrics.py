"""Quality metrics of a latent space, in numpy alone (both environments can run them)."""

from __future__ import annotations

import numpy as np


def _neighbours(
    queries: np.ndarray, references: np.ndarray, k: int, exclude_self: bool
) -> np.ndarray:
    """Indices of the ``k`` nearest references of each query (Euclidean), in blocks."""
    result = np.empty((len(queries), k), dtype=np.int64)
    reference_norms = (references**2).sum(1)
    for start in range(0, len(queries), 1024):
        block = queries[start : start + 1024]
        distances = (block**2).sum(1)[:, None] - 2 * block @ references.T + reference_norms[None]
        if exclude_self:
            rows = np.arange(len(block))
            distances[rows, start + rows] = np.inf
        result[start : start + len(block)] = np.argpartition(distances, k, axis=1)[:, :k]
    return result


def knn_accuracy(
    latent: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, k: int = 15
) -> float:
    """Accuracy of a majority vote of the ``k`` nearest training cells, on the test cells."""
    neighbours = _neighbours(latent[test], latent[train], k, exclude_self=False)
    votes = labels[train][neighbours]
    predicted = np.array([max(set(row), key=list(row).count) for row in votes])
    return float((predicted == labels[test]).mean())


def batch_mixing_entropy(latent: np.ndarray, batches: np.ndarray, k: int = 50) -> float:
    """Mean entropy of the batches among each cell's ``k`` neighbours, divided by its maximum.

    1 means every neighbourhood holds the batches in equal parts (perfect mixing), 0 means
    every neighbourhood holds a single batch.
    """
    categories, codes = np.unique(batches, return_inverse=True)
    neighbours = _neighbours(latent, latent, k, exclude_self=True)
    counts = np.stack([(codes[neighbours] == c).sum(1) for c in range(len(categories))], axis=1)
    shares = counts / k
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(shares > 0, shares * np.log(shares), 0.0), axis=1)
    return float(entropy.mean() / np.log(len(categories)))
