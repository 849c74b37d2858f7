"""Small, hand-made AnnData objects and helpers for the data-registration tests.

Everything here is built from a seeded numpy Generator so every test sees the same cells.
Helpers are exposed as fixtures (``make_adata``, ``seed_fields``, ``assert_unchanged``) so the
test modules need no import path tricks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

from cellvi.data import REGISTRY_KEYS
from cellvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
    NumericalObsField,
    ObsmField,
)

N_CELLS = 40
N_GENES = 12
N_PROTEINS = 5
BATCHES = ["a", "b"]
LABELS = ["B cell", "NK", "T cell"]  # sorted: the codes a string column gets
DONORS = ["d1", "d2", "d3"]
SITES = ["s1", "s2"]


def _balanced(rng: np.random.Generator, values: list[str], n: int) -> np.ndarray:
    """``n`` values cycling through ``values`` (each present when n >= len), shuffled."""
    out = np.resize(np.asarray(values, dtype=object), n)
    rng.shuffle(out)
    return out


def build_adata(
    seed: int = 0,
    n_cells: int = N_CELLS,
    n_genes: int = N_GENES,
    sparse_x: bool = False,
    batches: list[str] | None = None,
) -> AnnData:
    """A tiny AnnData with counts in X and layers, covariates in obs and proteins in obsm."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(3.0, size=(n_cells, n_genes)).astype(np.float32)
    batch_values = _balanced(rng, batches or BATCHES, n_cells)
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical(batch_values, categories=sorted(set(batches or BATCHES))),
            "labels": _balanced(rng, LABELS, n_cells),  # plain strings (object dtype)
            "size_factor": rng.uniform(0.5, 2.0, n_cells),
            "donor": pd.Categorical(_balanced(rng, DONORS, n_cells), categories=DONORS),
            "site": pd.Categorical(_balanced(rng, SITES, n_cells), categories=SITES),
            "age": rng.normal(50.0, 10.0, n_cells),
            "pct_mito": rng.uniform(0.0, 0.2, n_cells),
        },
        index=pd.Index([f"cell_{i}" for i in range(n_cells)]),
    )
    var = pd.DataFrame(index=pd.Index([f"gene_{j}" for j in range(n_genes)]))
    x = sparse.csr_matrix(counts) if sparse_x else counts.copy()
    adata = AnnData(X=x, obs=obs, var=var)
    adata.layers["counts"] = sparse.csr_matrix(counts) if sparse_x else counts.copy()
    normalized = np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1.0) * 1e4)
    adata.layers["normalized"] = (normalized - normalized.mean(0)).astype(np.float32)
    adata.obsm["protein_expression"] = rng.poisson(10.0, size=(n_cells, N_PROTEINS)).astype(
        np.float32
    )
    adata.uns["protein_names"] = np.array([f"prot_{k}" for k in range(N_PROTEINS)])
    return adata


def seed_fields(
    batch_key: str | None = None,
    layer: str | None = None,
    labels_key: str | None = None,
    size_factor_key: str | None = None,
    categorical_covariate_keys: list[str] | None = None,
    continuous_covariate_keys: list[str] | None = None,
    protein_key: str | None = None,
) -> list:
    """The fields of the seed-004 ``setup_anndata`` (plus an optional protein ObsmField)."""
    fields = [
        LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
        CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
        CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
        NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, required=False),
        CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
        NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
    ]
    if protein_key is not None:
        fields.append(
            ObsmField(
                REGISTRY_KEYS.PROTEIN_EXP_KEY,
                protein_key,
                is_count_data=True,
                colnames_uns_key="protein_names",
            )
        )
    return fields


def full_setup_kwargs() -> dict:
    """Every optional key of ``seed_fields`` set to a column of ``build_adata``."""
    return {
        "batch_key": "batch",
        "labels_key": "labels",
        "size_factor_key": "size_factor",
        "categorical_covariate_keys": ["donor", "site"],
        "continuous_covariate_keys": ["age", "pct_mito"],
        "protein_key": "protein_expression",
    }


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)


def _assert_same_value(expected, actual, where: str) -> None:
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(actual, expected, obj=where)
    elif isinstance(expected, np.ndarray) or sparse.issparse(expected):
        assert type(actual) is type(expected), where
        np.testing.assert_array_equal(_dense(actual), _dense(expected), err_msg=where)
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            _assert_same_value(expected[key], actual[key], f"{where}[{key!r}]")
    else:
        assert actual == expected, where


def assert_unchanged(before: AnnData, adata: AnnData) -> None:
    """Assert that ``adata`` holds exactly what ``before`` (a copy taken earlier) held."""
    assert list(adata.obs_names) == list(before.obs_names)
    assert list(adata.var_names) == list(before.var_names)
    assert list(adata.obs.columns) == list(before.obs.columns), "obs columns changed"
    pd.testing.assert_frame_equal(adata.obs, before.obs, obj="adata.obs")
    assert list(adata.obsm.keys()) == list(before.obsm.keys()), "obsm keys changed"
    for key in before.obsm.keys():
        _assert_same_value(before.obsm[key], adata.obsm[key], f"adata.obsm[{key!r}]")
    assert sorted(adata.uns.keys()) == sorted(before.uns.keys()), "uns keys changed"
    for key in before.uns.keys():
        _assert_same_value(before.uns[key], adata.uns[key], f"adata.uns[{key!r}]")
    assert list(adata.layers.keys()) == list(before.layers.keys()), "layers changed"
    for key in before.layers.keys():
        _assert_same_value(before.layers[key], adata.layers[key], f"adata.layers[{key!r}]")
    if before.X is None:
        assert adata.X is None
    else:
        _assert_same_value(before.X, adata.X, "adata.X")


# Fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def adata() -> AnnData:
    """Dense counts."""
    return build_adata(seed=0)


@pytest.fixture
def adata_csr() -> AnnData:
    """CSR counts."""
    return build_adata(seed=0, sparse_x=True)


@pytest.fixture(params=["dense", "csr"])
def any_adata(request) -> AnnData:
    """Dense and CSR variants of the same data."""
    return build_adata(seed=0, sparse_x=request.param == "csr")


@pytest.fixture
def make_adata() -> Callable[..., AnnData]:
    return build_adata


@pytest.fixture(name="seed_fields")
def seed_fields_fixture() -> Callable[..., list]:
    return seed_fields


@pytest.fixture(name="full_setup_kwargs")
def full_setup_kwargs_fixture() -> dict:
    return full_setup_kwargs()


@pytest.fixture(name="assert_unchanged")
def assert_unchanged_fixture() -> Callable[[AnnData, AnnData], None]:
    return assert_unchanged
