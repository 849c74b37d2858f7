"""Latent figures of the benchmarks: kNN transfer, scib-metrics' figures and their plumbing.

The scib-metrics tests skip without the ``bench`` extra; the rest always runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import compare_scvi_tools  # noqa: E402
from _latent_metrics import (  # noqa: E402
    conservation_metrics,
    integration_metrics,
    knn_accuracy,
    pre_integration_embedding,
    require_bench_extra,
)


def _two_groups(seed: int, apart: bool) -> tuple[np.ndarray, np.ndarray]:
    """400 cells in 5 dimensions, groups 'x' and 'y' alternating; 20 apart or mixed."""
    rng = np.random.default_rng(seed)
    groups = np.array(["x", "y"] * 200)
    latent = rng.normal(size=(400, 5)).astype(np.float32)
    if apart:
        latent[groups == "y", 0] += 20.0
    return latent, groups


def _exact_search(latent: np.ndarray, n_neighbours: int):
    """scib-metrics' exact search on CPU: compiles in a second (pynndescent: a minute)."""
    from scib_metrics.nearest_neighbors import jax_approx_min_k

    return jax_approx_min_k(latent, n_neighbours)


# Always run: kNN transfer, the install hint, the plumbing -----------------------------------


def test_knn_accuracy_separates_clusters_and_falls_to_chance_on_noise():
    latent, labels = _two_groups(1, apart=True)
    train, test = np.arange(0, 400, 3), np.arange(1, 400, 3)  # both groups in each
    assert knn_accuracy(latent, labels, train, test) == 1.0
    noise, _ = _two_groups(2, apart=False)
    assert abs(knn_accuracy(noise, labels, train, test) - 0.5) < 0.15


def test_knn_accuracy_votes_among_the_k_nearest_training_cells():
    # Test cell at 0: its 3 nearest training cells are two 'a' and one 'b' -> 'a'; with k=5
    # the two further 'b' cells join and outvote them.
    latent = np.array([[0.0], [0.1], [-0.2], [0.3], [1.0], [-1.1]])
    labels = np.array(["t", "a", "a", "b", "b", "b"])
    train, test = np.arange(1, 6), np.array([0])
    assert knn_accuracy(latent, np.where(labels == "t", "a", labels), train, test, k=3) == 1.0
    assert knn_accuracy(latent, np.where(labels == "t", "a", labels), train, test, k=5) == 0.0


def test_missing_bench_extra_stops_before_training_with_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "scib_metrics", None)
    with pytest.raises(SystemExit) as stop:
        require_bench_extra()
    assert 'pip install -e ".[bench]"' in str(stop.value) and "scib_metrics" in str(stop.value)

    def no_training(*args, **kwargs):
        raise AssertionError("trained without scib-metrics")

    monkeypatch.setattr(compare_scvi_tools, "run_all", no_training)
    argv = ["compare_scvi_tools.py", "--reference-python", sys.executable, "--data-dir", "."]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match=r"pip install -e \"\.\[bench\]\""):
        compare_scvi_tools.main()


def test_add_latent_metrics_leaves_out_unlabelled_cells_and_passes_batches(monkeypatch):
    calls = {}

    def conservation(latent, labels):
        calls["conservation"] = latent, labels
        return {"silhouette_label": 0.5}

    def integration(latent, batches, pre_integration):
        calls["integration"] = latent, batches, pre_integration
        return {"ilisi_knn": 0.25}

    monkeypatch.setattr(compare_scvi_tools, "conservation_metrics", conservation)
    monkeypatch.setattr(compare_scvi_tools, "integration_metrics", integration)
    latent, labels = _two_groups(0, apart=True)
    labels = labels.astype(object)
    labels[::10] = "NA"
    cells = anndata.AnnData(
        obs=pd.DataFrame(
            {"cell_type": labels, "condition": np.repeat(["ctrl", "stim"], 200)},
            index=[f"cell{i}" for i in range(400)],
        )
    )
    result = {"latent": latent, "train_indices": list(range(300)), "test_indices": [300, 301]}
    pre = np.zeros((400, 3))
    compare_scvi_tools.add_latent_metrics(result, cells, pre)
    assert set(result) == {"knn_accuracy", "silhouette_label", "ilisi_knn"}
    kept, kept_labels = calls["conservation"]
    assert len(kept) == len(kept_labels) == 360 and "NA" not in set(kept_labels)
    np.testing.assert_array_equal(kept, latent[labels != "NA"])
    assert calls["integration"][0] is latent and calls["integration"][2] is pre
    assert list(calls["integration"][1][[0, 399]]) == ["ctrl", "stim"]


# scib-metrics' figures (bench extra) ------------------------------------------------------


@pytest.fixture
def scib():
    return pytest.importorskip("scib_metrics")


def test_conservation_is_high_for_separated_types_and_low_for_noise(scib):
    apart = conservation_metrics(*_two_groups(0, apart=True), search=_exact_search)
    noise = conservation_metrics(*_two_groups(0, apart=False), search=_exact_search)
    assert set(apart) == {"silhouette_label", "clisi_knn", "nmi_kmeans", "ari_kmeans"}
    assert apart["nmi_kmeans"] == pytest.approx(1.0) and apart["ari_kmeans"] == pytest.approx(1.0)
    assert apart["clisi_knn"] == pytest.approx(1.0, abs=1e-3) and apart["silhouette_label"] > 0.8
    assert noise["nmi_kmeans"] < 0.05 and noise["clisi_knn"] < 0.2
    assert abs(noise["silhouette_label"] - 0.5) < 0.05  # rescaled: 0.5 is no structure


def test_integration_is_high_for_mixed_batches_and_low_for_separated(scib):
    mixed, batches = _two_groups(0, apart=False)
    apart, _ = _two_groups(0, apart=True)
    # Before "integration" the batches sit apart in the first axis: the latent removes it.
    pre = apart
    good = integration_metrics(mixed, batches, pre, search=_exact_search)
    bad = integration_metrics(apart, batches, search=_exact_search)
    assert set(good) == {"ilisi_knn", "kbet", "pcr_comparison"} and set(bad) == {
        "ilisi_knn",
        "kbet",
    }
    assert good["ilisi_knn"] > 0.9 and bad["ilisi_knn"] < 0.01
    assert good["kbet"] > 0.8 and bad["kbet"] < 0.01
    assert good["pcr_comparison"] > 0.9


def test_pre_integration_embedding_is_50_pcs_of_log_normalised_counts(scib):
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(120, 80)).astype(np.float32)
    counts[:60, :10] += 30  # a "batch" effect the first component picks up
    cells = anndata.AnnData(counts)
    embedding = pre_integration_embedding(cells)
    assert embedding.shape == (120, 50)
    np.testing.assert_array_equal(cells.X, counts)  # the counts themselves are left alone
    first = embedding[:, 0]
    assert abs(first[:60].mean() - first[60:].mean()) > 5 * first[:60].std()
