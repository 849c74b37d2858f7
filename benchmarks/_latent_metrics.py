"""Quality figures of a latent space: the field's own (scib-metrics) and a kNN label transfer.

The conservation and integration figures are scib-metrics' functions, called the way its
``Benchmarker`` calls them (one pynndescent search of 90 neighbours, seed 0, cut to 50 for
kBET; LISI on 90), so that they are the numbers the field reports. scib-metrics (and the
jax it pulls in) is the optional ``bench`` extra: it is imported only inside the functions
that need it, and ``require_bench_extra`` says how to install it. A hand-written batch-mixing
entropy used to stand here; scib-metrics' iLISI is the standard figure for it and replaces it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

INSTALL_HINT = (
    "The benchmarks' conservation and integration figures come from scib-metrics, which is "
    "not installed here. Install the optional `bench` extra in cellvi's environment:\n"
    '    pip install -e ".[bench]"'
)
# Neighbourhood sizes of scib-metrics' Benchmarker: one search of the largest, then cut.
N_NEIGHBOURS = 90
N_NEIGHBOURS_KBET = 50
# Principal components of the pre-integration embedding (scanpy's default, as Benchmarker).
N_PRE_INTEGRATION_COMPONENTS = 50


def require_bench_extra() -> None:
    """Stop with the install command when scib-metrics or scanpy is missing (no traceback)."""
    missing = [
        name for name in ("scib_metrics", "scanpy") if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise SystemExit(f"{INSTALL_HINT}\n(missing: {', '.join(missing)})")


def knn_accuracy(
    latent: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, k: int = 15
) -> float:
    """Accuracy of a majority vote of the ``k`` nearest training cells, on the test cells.

    A label-transfer figure: scib-metrics has none (its conservation metrics score the
    whole embedding, not a prediction for held-out cells), so it stays, computed by
    scikit-learn's ``KNeighborsClassifier`` (Euclidean, uniform votes).
    """
    from sklearn.neighbors import KNeighborsClassifier

    classifier = KNeighborsClassifier(n_neighbors=k).fit(latent[train], labels[train])
    return float(classifier.score(latent[test], labels[test]))


def neighbours(latent: np.ndarray, n_neighbours: int = N_NEIGHBOURS) -> Any:
    """scib-metrics' ``NeighborsResults`` of the latent, as its Benchmarker searches them.

    Its pynndescent search (approximate; numba compiles it for about a minute on the first
    call of a process). Any function of (latent, n_neighbours) returning ``NeighborsResults``
    can stand in, e.g. scib-metrics' exact ``jax_approx_min_k`` on CPU.
    """
    from scib_metrics.nearest_neighbors import pynndescent

    return pynndescent(np.asarray(latent), n_neighbors=n_neighbours, random_state=0, n_jobs=1)


def conservation_metrics(
    latent: np.ndarray, labels: np.ndarray, search: Callable[[np.ndarray, int], Any] = neighbours
) -> dict[str, float]:
    """How well the latent keeps cell types apart (scib-metrics' bio conservation figures).

    ``silhouette_label`` (rescaled to [0, 1]), ``clisi_knn`` (scaled, 90 neighbours), and the
    NMI and ARI of k-means clusters (k = number of labels, scib-metrics' own seeded k-means)
    against the labels; higher is better for all. ``isolated_labels`` is left out: it needs
    several batches (with one, every label counts as isolated and it is a label-balanced
    silhouette). ``search`` finds the neighbours (see ``neighbours``).
    """
    import scib_metrics

    latent = np.asarray(latent, dtype=np.float32)
    clusters = scib_metrics.nmi_ari_cluster_labels_kmeans(latent, labels)
    return {
        "silhouette_label": float(scib_metrics.silhouette_label(latent, labels)),
        "clisi_knn": float(scib_metrics.clisi_knn(search(latent, N_NEIGHBOURS), labels)),
        "nmi_kmeans": float(clusters["nmi"]),
        "ari_kmeans": float(clusters["ari"]),
    }


def integration_metrics(
    latent: np.ndarray,
    batches: np.ndarray,
    pre_integration: np.ndarray | None = None,
    search: Callable[[np.ndarray, int], Any] = neighbours,
) -> dict[str, float]:
    """How well the latent mixes batches (scib-metrics' batch correction figures, label-free).

    ``ilisi_knn`` (scaled, 90 neighbours: the standard batch-mixing figure), the kBET
    acceptance rate over all cells (50 neighbours; the per-label kBET of scIB needs labels)
    and, given a pre-integration embedding, ``pcr_comparison`` (share of the batch's variance
    contribution removed). ``silhouette_batch``, ``kbet_per_label`` and
    ``graph_connectivity`` need cell labels and are left out. Higher is better for all.
    ``search`` finds the neighbours (see ``neighbours``).
    """
    import scib_metrics

    latent = np.asarray(latent, dtype=np.float32)
    found = search(latent, N_NEIGHBOURS)
    acceptance, _, _ = scib_metrics.kbet(found.subset_neighbors(N_NEIGHBOURS_KBET), batches)
    figures = {
        "ilisi_knn": float(scib_metrics.ilisi_knn(found, batches)),
        "kbet": float(acceptance),
    }
    if pre_integration is not None:
        figures["pcr_comparison"] = float(
            scib_metrics.pcr_comparison(pre_integration, latent, batches, categorical=True)
        )
    return figures


def pre_integration_embedding(adata) -> np.ndarray:
    """PCA of the log-normalised counts: the unintegrated embedding ``pcr_comparison`` takes.

    As scib-metrics' Benchmarker prepares it: scanpy's ``pca`` (50 components, ARPACK, seed
    0) of counts scaled to the median library size and log1p-transformed.
    """
    import scanpy as sc

    normalised = sc.pp.normalize_total(adata, copy=True)
    sc.pp.log1p(normalised)
    sc.tl.pca(normalised, n_comps=N_PRE_INTEGRATION_COMPONENTS, svd_solver="arpack", mask_var=None)
    return np.asarray(normalised.obsm["X_pca"])
