"""Tests of the built-in datasets ``synthetic_iid`` and ``simulate``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from cellvi.data import simulate, synthetic_iid
from cellvi.data._simulate import _INVERSE_CDF_MAX_MEAN, _negative_binomial


def _dense(matrix: np.ndarray | sp.spmatrix | sp.sparray) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def _is_whole(values: np.ndarray) -> bool:
    return bool(np.all(values >= 0) and np.all(values == np.round(values)))


def _pseudobulk(counts: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Fraction of all counts of ``rows`` that falls on each gene."""
    totals = np.asarray(counts[rows].sum(axis=0)).ravel()
    return totals / totals.sum()


# --------------------------------------------------------------------------------------------
# synthetic_iid
# --------------------------------------------------------------------------------------------


def test_synthetic_iid_default_layout() -> None:
    adata = synthetic_iid()

    assert adata.shape == (400, 100)
    assert list(adata.obs.columns) == ["batch", "labels"]
    assert list(adata.uns) == ["protein_names"]
    assert list(adata.obsm) == ["protein_expression", "accessibility"]
    assert "AnnData object with n_obs × n_vars = 400 × 100" in repr(adata)

    assert isinstance(adata.X, np.ndarray)
    assert adata.X.dtype == np.float32
    assert list(adata.obs_names[:3]) == ["0", "1", "2"]
    assert adata.obs_names.is_unique
    assert list(adata.var_names[:2]) == ["gene_0", "gene_1"]
    assert adata.var_names.is_unique

    batch = adata.obs["batch"]
    assert isinstance(batch.dtype, pd.CategoricalDtype)
    assert list(batch.cat.categories) == ["batch_0", "batch_1"]
    assert batch.value_counts().to_dict() == {"batch_0": 200, "batch_1": 200}
    labels = adata.obs["labels"]
    assert isinstance(labels.dtype, pd.CategoricalDtype)
    assert list(labels.cat.categories) == ["label_0", "label_1", "label_2"]

    proteins = adata.obsm["protein_expression"]
    assert isinstance(proteins, np.ndarray)
    assert proteins.shape == (400, 100)
    assert _is_whole(proteins)
    assert list(adata.uns["protein_names"][:2]) == ["protein_0", "protein_1"]
    assert len(adata.uns["protein_names"]) == 100

    accessibility = adata.obsm["accessibility"]
    assert accessibility.shape == (400, 100)
    assert np.isin(accessibility, [0.0, 1.0]).all()
    assert 0.0 < accessibility.mean() < 1.0


def test_synthetic_iid_counts_are_zero_inflated_whole_numbers() -> None:
    X = synthetic_iid(batch_size=500, dropout_ratio=0.7).X
    assert _is_whole(X)
    # Dropout zeros plus the negative binomial's own (0.3**5 of the rest).
    assert abs((X == 0).mean() - (0.7 + 0.3 * 0.3**5)) < 0.02
    assert (synthetic_iid(dropout_ratio=0.0).X == 0).mean() < 0.01
    assert synthetic_iid(dropout_ratio=1.0).X.max() == 0


def test_synthetic_iid_honours_sizes() -> None:
    adata = synthetic_iid(
        batch_size=7, n_genes=11, n_proteins=5, n_regions=0, n_batches=3, n_labels=4
    )
    assert adata.shape == (21, 11)
    assert list(adata.obs["batch"].cat.categories) == ["batch_0", "batch_1", "batch_2"]
    assert list(adata.obs["batch"][:8]) == ["batch_0"] * 7 + ["batch_1"]
    assert len(adata.obs["labels"].cat.categories) == 4
    assert adata.obsm["protein_expression"].shape == (21, 5)
    assert "accessibility" not in adata.obsm
    assert "protein_expression" not in synthetic_iid(n_proteins=0).obsm


@pytest.mark.parametrize(
    ("sparse_format", "expected"),
    [
        (None, np.ndarray),
        ("csr_matrix", sp.csr_matrix),
        ("csc_matrix", sp.csc_matrix),
        ("csr_array", sp.csr_array),
        ("csc_array", sp.csc_array),
    ],
)
def test_synthetic_iid_sparse_formats(sparse_format: str | None, expected: type) -> None:
    adata = synthetic_iid(sparse_format=sparse_format, seed=0)
    assert type(adata.X) is expected
    assert adata.X.dtype == np.float32
    np.testing.assert_array_equal(_dense(adata.X), synthetic_iid(seed=0).X)


def test_synthetic_iid_is_deterministic() -> None:
    # Without a seed each call draws new data, as in scvi-tools; the global seed repeats it.
    assert not np.array_equal(synthetic_iid().X, synthetic_iid().X)
    np.random.seed(5)
    drawn = synthetic_iid().X
    np.random.seed(5)
    np.testing.assert_array_equal(synthetic_iid().X, drawn)
    first, second, other = synthetic_iid(seed=3), synthetic_iid(seed=3), synthetic_iid(seed=4)
    np.testing.assert_array_equal(first.X, second.X)
    pd.testing.assert_frame_equal(first.obs, second.obs)
    for key in first.obsm:
        np.testing.assert_array_equal(first.obsm[key], second.obsm[key])
    assert not np.array_equal(first.X, other.X)
    assert not first.obs["labels"].equals(other.obs["labels"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sparse_format": "coo_matrix"},
        {"batch_size": 0},
        {"n_genes": -1},
        {"n_labels": 2.5},
        {"n_batches": True},
        {"n_proteins": -1},
        {"dropout_ratio": 1.5},
        {"dropout_ratio": float("nan")},
        {"seed": -1},
    ],
)
def test_synthetic_iid_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        synthetic_iid(**kwargs)


def test_synthetic_iid_error_names_allowed_formats() -> None:
    with pytest.raises(ValueError, match="'csr_matrix', 'csc_matrix'"):
        synthetic_iid(sparse_format="dense")


def test_synthetic_iid_coordinates_and_names() -> None:
    adata = synthetic_iid(
        seed=0,
        generate_coordinates=True,
        batch_key="sample",
        labels_key="cell_type",
        protein_expression_key="adt",
        protein_names_key="adt_names",
        protein_names_prefix="ab",
        accessibility_key="atac",
        gene_names_prefix="g",
        coordinates_key="spatial",
    )
    assert list(adata.obs.columns) == ["sample", "cell_type"]
    assert list(adata.obsm) == ["adt", "atac", "spatial"]
    assert adata.obsm["spatial"].shape == (400, 2) and isinstance(
        adata.obsm["spatial"], np.ndarray
    )
    assert list(adata.uns["adt_names"][:2]) == ["ab_0", "ab_1"]
    assert adata.var_names[0] == "g_0"
    # The coordinates are drawn last: the rest of the data stay those of the same seed.
    np.testing.assert_array_equal(adata.X, synthetic_iid(seed=0).X)


def test_synthetic_iid_without_labels_and_with_normal_values() -> None:
    assert "labels" not in synthetic_iid(n_labels=0).obs
    values = synthetic_iid(rna_dist="normal", dropout_ratio=0.0, batch_size=500).X
    assert abs(values.mean() - 5.0) < 0.1 and not _is_whole(values)
    with pytest.raises(ValueError, match="rna_dist"):
        synthetic_iid(rna_dist="poisson")


def test_synthetic_iid_sparse_format_applies_to_every_matrix() -> None:
    adata = synthetic_iid(sparse_format="csr_matrix", seed=0)
    assert all(sp.issparse(adata.obsm[key]) for key in ("protein_expression", "accessibility"))
    np.testing.assert_array_equal(
        adata.obsm["protein_expression"].toarray(),
        synthetic_iid(seed=0).obsm["protein_expression"],
    )


def test_synthetic_iid_as_mudata() -> None:
    pytest.importorskip("mudata")
    mdata = synthetic_iid(return_mudata=True, generate_coordinates=True, n_regions=0, seed=0)
    adata = synthetic_iid(generate_coordinates=True, n_regions=0, seed=0)
    assert list(mdata.mod) == ["rna", "protein_expression"]
    np.testing.assert_array_equal(mdata.mod["rna"].X, adata.X)
    np.testing.assert_array_equal(
        mdata.mod["protein_expression"].X, adata.obsm["protein_expression"]
    )
    assert list(mdata.mod["protein_expression"].var_names[:1]) == ["protein_0"]
    pd.testing.assert_series_equal(mdata.obs["batch"], adata.obs["batch"])
    np.testing.assert_array_equal(mdata.obsm["coordinates"], adata.obsm["coordinates"])


def test_synthetic_iid_writes_h5ad(tmp_path) -> None:
    pytest.importorskip("h5py")
    import anndata

    path = tmp_path / "synthetic.h5ad"
    synthetic_iid(sparse_format="csr_matrix").write_h5ad(path)
    back = anndata.read_h5ad(path)
    assert back.shape == (400, 100)
    assert list(back.uns["protein_names"][:1]) == ["protein_0"]


# --------------------------------------------------------------------------------------------
# simulate
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated():
    # The benchmark's gene count, with few cells to stay fast.
    return simulate(n_cells=3_000, n_genes=2_000, seed=0)


def test_simulate_layout(simulated) -> None:
    adata = simulated
    assert adata.shape == (3_000, 2_000)
    assert isinstance(adata.X, sp.csr_matrix)
    assert adata.X.dtype == np.float32
    assert adata.X.has_canonical_format
    adata.X.check_format(full_check=True)
    assert _is_whole(adata.X.data)
    assert (adata.X.data > 0).all()

    assert list(adata.obs.columns) == ["batch", "cell_type"]
    batch = adata.obs["batch"]
    assert isinstance(batch.dtype, pd.CategoricalDtype)
    assert list(batch.cat.categories) == ["batch_0", "batch_1"]
    assert batch.value_counts().to_dict() == {"batch_0": 1_500, "batch_1": 1_500}
    cell_type = adata.obs["cell_type"]
    assert isinstance(cell_type.dtype, pd.CategoricalDtype)
    assert list(cell_type.cat.categories) == [f"type_{t}" for t in range(5)]
    assert cell_type.value_counts().min() > 450
    assert adata.obs_names.is_unique and adata.obs_names[0] == "0"
    assert adata.var_names.is_unique and adata.var_names[0] == "gene_0"

    assert (adata.var["theta"] > 0).all()
    profiles = adata.varm["type_profiles"]
    assert profiles.shape == (2_000, 5) and profiles.dtype == np.float32
    np.testing.assert_allclose(profiles.sum(axis=0), 1.0, rtol=1e-4)
    assert adata.varm["batch_log_effects"].shape == (2_000, 2)

    params = adata.uns["simulation"]
    assert json.loads(json.dumps(params)) == params
    assert params["n_cells"] == 3_000 and params["seed"] == 0
    assert all(isinstance(v, int | float | str) for v in params.values())


def test_simulate_density_at_defaults(simulated) -> None:
    density = simulated.X.nnz / np.prod(simulated.shape)
    assert 0.25 < density < 0.45


def test_simulate_is_deterministic() -> None:
    kwargs = {"n_cells": 700, "n_genes": 300, "n_batches": 3}
    first = simulate(**kwargs, seed=5, n_threads=1)
    second = simulate(**kwargs, seed=5, n_threads=3)
    other = simulate(**kwargs, seed=6)
    assert (first.X != second.X).nnz == 0
    pd.testing.assert_frame_equal(first.obs, second.obs)
    np.testing.assert_array_equal(first.varm["type_profiles"], second.varm["type_profiles"])
    assert (first.X != other.X).nnz > 0
    assert not first.obs["cell_type"].equals(other.obs["cell_type"])


def test_simulate_batch_effect_is_visible(simulated) -> None:
    X, batch = simulated.X, simulated.obs["batch"].to_numpy()
    in_0, in_1 = np.flatnonzero(batch == "batch_0"), np.flatnonzero(batch == "batch_1")
    half_a, half_b = np.array_split(np.random.default_rng(0).permutation(in_0), 2)

    def distance(rows_a: np.ndarray, rows_b: np.ndarray) -> float:
        log_a = np.log(_pseudobulk(X, rows_a) + 1e-6)
        return float(np.mean(np.abs(log_a - np.log(_pseudobulk(X, rows_b) + 1e-6))))

    assert distance(in_0, in_1) > 3 * distance(half_a, half_b)

    flat = simulate(n_cells=200, n_genes=50, batch_effect_strength=0.0)
    assert not flat.varm["batch_log_effects"].any()


def test_simulate_cell_types_are_separable(simulated) -> None:
    X, cell_type = simulated.X, simulated.obs["cell_type"].to_numpy()
    profiles = np.log(simulated.varm["type_profiles"])
    n_types = profiles.shape[1]
    correlation = np.empty((n_types, n_types))
    for t in range(n_types):
        observed = np.log(_pseudobulk(X, np.flatnonzero(cell_type == f"type_{t}")) + 1e-6)
        for s in range(n_types):
            correlation[t, s] = np.corrcoef(observed, profiles[:, s])[0, 1]
    np.testing.assert_array_equal(correlation.argmax(axis=1), np.arange(n_types))
    off_diagonal = correlation[~np.eye(n_types, dtype=bool)]
    assert correlation.diagonal().min() > off_diagonal.max() + 0.05


def test_simulate_library_sizes_spread(simulated) -> None:
    totals = np.asarray(simulated.X.sum(axis=1)).ravel()
    spread = totals.std() / totals.mean()
    assert spread > 0.3
    assert 1_000 < np.median(totals) < 3_000

    # Without library variation only count noise and type/batch differences remain.
    fixed = simulate(n_cells=300, n_genes=2_000, library_log_std=0.0)
    fixed_totals = np.asarray(fixed.X.sum(axis=1)).ravel()
    assert fixed_totals.std() / fixed_totals.mean() < spread / 3


def test_simulate_counts_follow_the_model() -> None:
    # One type, one batch and a fixed library make every cell share the same gene means.
    adata = simulate(
        n_cells=20_000,
        n_genes=40,
        n_batches=1,
        n_cell_types=1,
        library_log_mean=np.log(80.0),
        library_log_std=0.0,
        seed=2,
    )
    rates = adata.varm["type_profiles"][:, 0] * np.exp(adata.varm["batch_log_effects"][:, 0])
    mu = 80.0 * rates / rates.sum()
    theta = adata.var["theta"].to_numpy().astype(np.float64)
    assert (mu < _INVERSE_CDF_MAX_MEAN).any() and (mu > _INVERSE_CDF_MAX_MEAN).any()

    counts = adata.X.toarray()
    n = counts.shape[0]
    variance = mu + mu**2 / theta
    z_mean = (counts.mean(axis=0) - mu) / np.sqrt(variance / n)
    assert np.abs(z_mean).max() < 5
    zero = (theta / (theta + mu)) ** theta
    z_zero = ((counts == 0).mean(axis=0) - zero) / np.sqrt(zero * (1 - zero) / n + 1e-12)
    assert np.abs(z_zero).max() < 5
    well_sampled = mu > 0.5
    ratio = counts.var(axis=0)[well_sampled] / variance[well_sampled]
    assert 0.8 < np.median(ratio) < 1.2


@pytest.mark.parametrize(
    ("mu", "theta"),
    [(0.05, 1.0), (0.8, 0.1), (2.0, 0.5), (3.9, 0.3), (3.9, 20.0), (4.1, 0.3), (30.0, 2.0)],
)
def test_negative_binomial_sampler_matches_distribution(mu: float, theta: float) -> None:
    n = 200_000
    draws = _negative_binomial(
        np.full(n, mu, dtype=np.float32), np.full(n, theta), np.random.default_rng(11)
    )
    assert draws.dtype == np.float32
    assert _is_whole(draws)
    top = 60
    observed = np.bincount(np.minimum(draws.astype(np.int64), top), minlength=top + 1)
    p = theta / (theta + mu)
    pmf = stats.nbinom.pmf(np.arange(top), theta, p)
    expected = n * np.append(pmf, stats.nbinom.sf(top - 1, theta, p))
    enough = expected > 5
    chi2 = ((observed[enough] - expected[enough]) ** 2 / expected[enough]).sum()
    assert stats.chi2.sf(chi2, enough.sum() - 1) > 1e-3


def test_simulate_programs_and_shapes() -> None:
    adata = simulate(n_cells=301, n_genes=123, n_batches=3, n_cell_types=2, n_programs=2, seed=1)
    assert adata.shape == (301, 123)
    assert adata.obs["batch"].value_counts().sort_index().tolist() == [101, 100, 100]
    assert adata.varm["type_profiles"].shape == (123, 2)
    assert adata.uns["simulation"]["n_programs"] == 2
    assert _is_whole(adata.X.data)
    single = simulate(n_cells=1, n_genes=1, n_batches=1, n_cell_types=1)
    assert single.shape == (1, 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_cells": 0},
        {"n_genes": -5},
        {"n_batches": 1.5},
        {"n_cell_types": True},
        {"n_programs": -1},
        {"marker_fraction": 1.5},
        {"type_effect_strength": -1.0},
        {"library_log_std": -0.1},
        {"batch_effect_strength": float("inf")},
        {"theta_log_mean": float("nan")},
        {"library_log_mean": "7"},
        {"seed": -1},
        {"n_threads": 0},
    ],
)
def test_simulate_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        simulate(**{"n_cells": 10, "n_genes": 10, **kwargs})


def test_simulate_writes_h5ad(tmp_path) -> None:
    pytest.importorskip("h5py")
    import anndata

    path = tmp_path / "simulated.h5ad"
    simulate(n_cells=50, n_genes=20).write_h5ad(path)
    back = anndata.read_h5ad(path)
    assert back.uns["simulation"]["n_genes"] == 20
    assert back.varm["type_profiles"].shape == (20, 5)
