"""Small registered AnnData objects for the data loader tests, and a seed-restoring fixture.

The AnnData is registered with every field kind a loader must serve: counts in X (dense, CSR
or CSC), a categorical batch, labels left unset (one category), a numeric size factor,
categorical and continuous joint covariates, and an obsm count matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

import cellvi
from cellvi.data import REGISTRY_KEYS, AnnDataManager
from cellvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
    NumericalObsField,
    ObsmField,
)

N_CELLS = 50
N_GENES = 7
N_PROTEINS = 3
DONORS = ["d1", "d2", "d3"]
SITES = ["s1", "s2"]


def build_adata(n_cells: int = N_CELLS, x_format: str = "dense", seed: int = 0) -> AnnData:
    """A tiny AnnData whose counts are stored as ``x_format`` ("dense", "csr" or "csc")."""
    rng = np.random.default_rng(seed)
    # Sparse-ish counts so CSR/CSC really hold structural zeros.
    counts = rng.poisson(1.0, size=(n_cells, N_GENES)) * rng.integers(0, 2, (n_cells, N_GENES))
    counts = counts.astype(np.float32)
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical(rng.choice(["b0", "b1", "b2"], n_cells)),
            "size_factor": rng.uniform(0.5, 2.0, n_cells),
            "donor": pd.Categorical(rng.choice(DONORS, n_cells), categories=DONORS),
            "site": pd.Categorical(rng.choice(SITES, n_cells), categories=SITES),
            "age": rng.normal(50.0, 10.0, n_cells),
            "pct_mito": rng.uniform(0.0, 0.2, n_cells),
        },
        index=pd.Index([f"cell_{i}" for i in range(n_cells)]),
    )
    var = pd.DataFrame(index=pd.Index([f"gene_{j}" for j in range(N_GENES)]))
    x = {"dense": counts, "csr": sparse.csr_matrix(counts), "csc": sparse.csc_matrix(counts)}[
        x_format
    ]
    adata = AnnData(X=x, obs=obs, var=var)
    adata.obsm["protein_expression"] = rng.poisson(5.0, (n_cells, N_PROTEINS)).astype(np.float64)
    adata.uns["protein_names"] = np.array([f"prot_{k}" for k in range(N_PROTEINS)])
    return adata


def register(adata: AnnData) -> AnnDataManager:
    """Register ``adata`` with one field of every kind."""
    manager = AnnDataManager(
        fields=[
            LayerField(REGISTRY_KEYS.X_KEY, None, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, "batch"),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, None),
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, "size_factor", required=False),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, ["donor", "site"]),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, ["age", "pct_mito"]),
            ObsmField(
                REGISTRY_KEYS.PROTEIN_EXP_KEY,
                "protein_expression",
                is_count_data=True,
                colnames_uns_key="protein_names",
            ),
        ]
    )
    manager.register_fields(adata)
    return manager


def expected_arrays(adata: AnnData) -> dict[str, np.ndarray]:
    """What a loader must serve for every cell, computed from the AnnData independently."""
    x = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)
    obs = adata.obs
    return {
        REGISTRY_KEYS.X_KEY: x.astype(np.float32),
        REGISTRY_KEYS.BATCH_KEY: obs["batch"].cat.codes.to_numpy().astype(np.int64)[:, None],
        REGISTRY_KEYS.LABELS_KEY: np.zeros((adata.n_obs, 1), dtype=np.int64),
        REGISTRY_KEYS.SIZE_FACTOR_KEY: obs["size_factor"].to_numpy(np.float32)[:, None],
        REGISTRY_KEYS.CAT_COVS_KEY: np.stack(
            [obs["donor"].cat.codes.to_numpy(), obs["site"].cat.codes.to_numpy()], axis=1
        ).astype(np.int64),
        REGISTRY_KEYS.CONT_COVS_KEY: obs[["age", "pct_mito"]].to_numpy(np.float32),
        REGISTRY_KEYS.PROTEIN_EXP_KEY: adata.obsm["protein_expression"].astype(np.float32),
    }


# The manager refers to its AnnData weakly, so each fixture keeps the AnnData alive itself
# for as long as the test runs.


@pytest.fixture
def make_manager() -> Iterator[Callable[..., AnnDataManager]]:
    """Build and register an AnnData: ``make_manager(x_format="csr", n_cells=50)``."""
    alive: list[AnnData] = []

    def make(x_format: str = "dense", n_cells: int = N_CELLS) -> AnnDataManager:
        alive.append(build_adata(n_cells=n_cells, x_format=x_format))
        return register(alive[-1])

    yield make


@pytest.fixture
def manager() -> Iterator[AnnDataManager]:
    """Dense counts, every field registered."""
    adata = build_adata()
    yield register(adata)


@pytest.fixture(params=["dense", "csr", "csc"])
def any_manager(request) -> Iterator[AnnDataManager]:
    """The same data with X stored dense, CSR and CSC."""
    adata = build_adata(x_format=request.param)
    yield register(adata)


@pytest.fixture(name="expected_arrays")
def expected_arrays_fixture() -> Callable[[AnnData], dict[str, np.ndarray]]:
    return expected_arrays


@pytest.fixture
def restore_seed() -> Iterator[None]:
    """Let a test set ``cellvi.settings.seed``; put the previous value (None) back afterwards."""
    previous = cellvi.settings.seed
    try:
        yield
    finally:
        cellvi.settings.seed = previous
