"""A small deterministic k-means (Lloyd's algorithm, k-means++ seeding) in numpy."""

from __future__ import annotations

import numpy as np


def kmeans(
    points: np.ndarray, n_clusters: int, n_init: int = 10, max_iter: int = 300, seed: int = 0
) -> np.ndarray:
    """Cluster ``points`` into ``n_clusters`` groups; the same input always gives the same labels.

    Parameters
    ----------
    points
        Array of shape (n_points, n_dims), ``n_points >= n_clusters >= 1``.
    n_clusters
        Number of clusters.
    n_init
        Restarts from different k-means++ seedings; the lowest within-cluster sum of squares
        wins (one seeding can settle in a poor local optimum).
    max_iter
        Lloyd iterations per restart at most.
    seed
        Seed of the random generator of the seedings (fixed, so results are reproducible
        whatever the global random state).

    Returns
    -------
    Cluster index of each point, an int64 array of shape (n_points,).
    """
    points = np.asarray(points, dtype=np.float64)
    if not 1 <= n_clusters <= len(points):
        raise ValueError(f"n_clusters must be in [1, {len(points)}], got {n_clusters}.")
    rng = np.random.default_rng(seed)
    best_labels, best_inertia = None, np.inf
    for _ in range(n_init):
        labels, inertia = _lloyd(points, _seed_centres(points, n_clusters, rng), max_iter)
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return best_labels


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    distances = (points**2).sum(1)[:, None] - 2 * points @ centres.T + (centres**2).sum(1)[None]
    return np.maximum(distances, 0.0)


def _seed_centres(points: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++: each new centre drawn with probability proportional to squared distance."""
    centres = [points[rng.integers(len(points))]]
    closest = _squared_distances(points, centres[0][None])[:, 0]
    for _ in range(1, n_clusters):
        total = closest.sum()
        # All points already coincide with a centre: any choice is as good.
        if total <= 0:
            index = rng.integers(len(points))
        else:
            index = rng.choice(len(points), p=closest / total)
        centres.append(points[index])
        closest = np.minimum(closest, _squared_distances(points, points[index][None])[:, 0])
    return np.stack(centres)


def _lloyd(points: np.ndarray, centres: np.ndarray, max_iter: int) -> tuple[np.ndarray, float]:
    labels = np.full(len(points), -1)
    for _ in range(max_iter):
        distances = _squared_distances(points, centres)
        new_labels = distances.argmin(1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for cluster in range(len(centres)):
            members = labels == cluster
            if members.any():
                centres[cluster] = points[members].mean(0)
            else:
                # Re-seed an emptied cluster at the point worst served by its centre.
                worst = distances[np.arange(len(points)), labels].argmax()
                centres[cluster] = points[worst]
                labels[worst] = cluster
    inertia = float(_squared_distances(points, centres)[np.arange(len(points)), labels].sum())
    return labels, inertia
