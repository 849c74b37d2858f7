"""Bad inputs: each gives a clear error (or warning) and leaves the AnnData as it was."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

from cellvi.data import REGISTRY_KEYS, AnnDataManager
from cellvi.data._constants import MANAGER_UUID_KEY, SETUP_UUID_KEY
from cellvi.data.fields import LayerField, ObsmField


@pytest.fixture
def setup(seed_fields):
    """Register ``adata`` with the seed-004 fields; returns the manager."""

    def run(adata, **kwargs) -> AnnDataManager:
        manager = AnnDataManager(fields=seed_fields(**kwargs))
        manager.register_fields(adata)
        return manager

    return run


def expect_failure(adata, assert_unchanged, call, error, match):
    """Run ``call``; it must raise ``error`` matching ``match`` and leave ``adata`` unchanged."""
    before = adata.copy()
    with pytest.raises(error, match=match):
        call()
    assert_unchanged(before, adata)


def set_x_value(adata, value, row=2, col=3):
    """Put ``value`` at X[row, col] (dense or CSR, as a stored entry)."""
    if sparse.issparse(adata.X):
        x = adata.X.toarray()
        x[row, col] = value
        adata.X = sparse.csr_matrix(x)
    else:
        adata.X[row, col] = value


# Missing keys -------------------------------------------------------------------------------


def test_missing_obs_key(adata, setup, assert_unchanged):
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, batch_key="batchh"),
        KeyError,
        r"batch_key: 'batchh' is not a key of adata.obs \(present: 'batch', 'labels'",
    )


def test_missing_layer(adata, setup, assert_unchanged):
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, layer="raw"),
        KeyError,
        r"layer for 'X': 'raw' is not a key of adata.layers \(present: 'counts', 'normalized'\)",
    )


def test_missing_obsm_key(adata, setup, assert_unchanged):
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, batch_key="batch", protein_key="adt"),
        KeyError,
        r"proteins matrix: 'adt' is not a key of adata.obsm",
    )


def test_missing_covariate_keys(adata, setup, assert_unchanged):
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, categorical_covariate_keys=["donor", "nope"]),
        KeyError,
        r"'nope' is not a key of adata.obs",
    )
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, continuous_covariate_keys=["nope"]),
        KeyError,
        r"'nope' is not a key of adata.obs",
    )


def test_missing_colnames_uns_key(adata, setup, assert_unchanged):
    del adata.uns["protein_names"]
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, protein_key="protein_expression"),
        KeyError,
        r"'protein_names' is not a key of adata.uns",
    )


# Bad counts in X ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (-1.0, r"adata.X holds negative values.*raw counts"),
        (np.nan, r"adata.X holds NaN or infinite values \(1 NaN"),
        (np.inf, r"adata.X holds NaN or infinite values \(0 NaN"),
        (-np.inf, r"adata.X holds NaN or infinite values"),
    ],
)
def test_bad_counts_in_x(any_adata, setup, assert_unchanged, value, match):
    set_x_value(any_adata, value)
    expect_failure(
        any_adata, assert_unchanged, lambda: setup(any_adata, batch_key="batch"), ValueError, match
    )


def test_bad_counts_in_layer(adata, setup, assert_unchanged):
    adata.layers["counts"][0, 0] = -3
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, layer="counts"),
        ValueError,
        r"adata.layers\['counts'\] holds negative values",
    )


def test_non_numeric_x(adata, setup, assert_unchanged):
    adata.X = adata.X.astype(str).astype(object)
    expect_failure(
        adata, assert_unchanged, lambda: setup(adata), ValueError, r"adata.X must be numeric"
    )


def test_x_is_none(adata, setup, assert_unchanged):
    adata.X = None
    expect_failure(adata, assert_unchanged, lambda: setup(adata), ValueError, r"adata.X is empty")


def test_non_integer_counts_warn(any_adata, setup):
    set_x_value(any_adata, 2.5)
    with pytest.warns(UserWarning, match=r"adata.X holds non-integer values.*raw counts"):
        manager = setup(any_adata, batch_key="batch")
    assert manager.adata is any_adata
    assert "_scvi_batch" in any_adata.obs
    assert any_adata.uns[MANAGER_UUID_KEY] == manager.id


def test_integer_counts_do_not_warn(any_adata, setup):
    any_adata.X = any_adata.X.astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        setup(any_adata, batch_key="batch")


# Bad counts in a count ObsmField ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (-1.0, r"adata.obsm\['protein_expression'\] holds negative values"),
        (np.nan, r"adata.obsm\['protein_expression'\] holds NaN or infinite"),
        (np.inf, r"adata.obsm\['protein_expression'\] holds NaN or infinite"),
    ],
)
def test_bad_counts_in_obsm(adata, setup, assert_unchanged, value, match):
    adata.obsm["protein_expression"][4, 2] = value
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, batch_key="batch", protein_key="protein_expression"),
        ValueError,
        match,
    )


def test_bad_counts_in_obsm_dataframe(adata, assert_unchanged):
    frame = pd.DataFrame(adata.obsm["protein_expression"], index=adata.obs_names)
    frame.iloc[0, 0] = np.nan
    adata.obsm["protein_expression"] = frame
    field = ObsmField(REGISTRY_KEYS.PROTEIN_EXP_KEY, "protein_expression", is_count_data=True)
    expect_failure(
        adata,
        assert_unchanged,
        lambda: AnnDataManager(fields=[field]).register_fields(adata),
        ValueError,
        r"holds NaN",
    )


def test_non_integer_counts_in_obsm_warn(adata, setup):
    adata.obsm["protein_expression"][4, 2] = 0.5
    with pytest.warns(UserWarning, match=r"adata.obsm\['protein_expression'\] holds non-integer"):
        manager = setup(adata, protein_key="protein_expression")
    assert manager.summary_stats.n_proteins == 5


# Whole-AnnData problems ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 12), (40, 0), (0, 0)])
def test_empty_anndata(setup, assert_unchanged, shape):
    empty = AnnData(np.zeros(shape, dtype=np.float32))
    expect_failure(
        empty,
        assert_unchanged,
        lambda: setup(empty),
        ValueError,
        rf"This AnnData is empty \({shape[0]} cells x {shape[1]} genes\)",
    )


def test_empty_anndata_on_transfer(adata, setup, assert_unchanged):
    manager = setup(adata, batch_key="batch")
    empty = adata[:0].copy()
    expect_failure(
        empty,
        assert_unchanged,
        lambda: manager.transfer_fields(empty),
        ValueError,
        r"empty \(0 cells",
    )


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_duplicated_var_names(adata, setup, assert_unchanged):
    adata.var_names = ["gene_0", "gene_0", "gene_1"] + [f"gene_{j}" for j in range(3, 12)]
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, batch_key="batch"),
        ValueError,
        r"duplicated names \(e.g. \['gene_0'\]\).*var_names_make_unique",
    )


def test_view(adata, setup, assert_unchanged):
    before = adata.copy()
    view = adata[adata.obs["batch"] == "a"]
    assert view.is_view
    with pytest.raises(ValueError, match=r"is a view.*adata\[mask\]\.copy\(\)"):
        setup(view, batch_key="batch")
    assert view.is_view
    assert_unchanged(before, adata)


def test_view_on_transfer(adata, make_adata, setup, assert_unchanged):
    manager = setup(adata, batch_key="batch")
    other = make_adata(seed=3)
    before = other.copy()
    with pytest.raises(ValueError, match=r"is a view"):
        manager.transfer_fields(other[:10])
    assert_unchanged(before, other)


def test_not_an_anndata(setup):
    with pytest.raises(TypeError, match=r"Expected an AnnData object, got DataFrame"):
        setup(pd.DataFrame({"a": [1]}))


# Bad obs columns ----------------------------------------------------------------------------


def test_nan_in_categorical_obs(adata, setup, assert_unchanged):
    adata.obs.loc[adata.obs_names[[1, 5]], "batch"] = np.nan
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, batch_key="batch"),
        ValueError,
        r"adata.obs\['batch'\] has 2 missing values",
    )


def test_nan_in_string_labels(adata, setup, assert_unchanged):
    labels = adata.obs["labels"].to_numpy().copy()
    labels[0] = None
    adata.obs["labels"] = labels
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, batch_key="batch", labels_key="labels"),
        ValueError,
        r"adata.obs\['labels'\] has 1 missing values",
    )


def test_nan_in_categorical_covariate(adata, setup, assert_unchanged):
    adata.obs.loc[adata.obs_names[0], "site"] = np.nan
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, batch_key="batch", categorical_covariate_keys=["donor", "site"]),
        ValueError,
        r"adata.obs\['site'\] has 1 missing values",
    )


def test_non_numeric_continuous_covariate(adata, setup, assert_unchanged):
    adata.obs["age"] = ["young", "old"] * 20
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, batch_key="batch", continuous_covariate_keys=["pct_mito", "age"]),
        ValueError,
        r"adata.obs\['age'\] must be numeric",
    )


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_continuous_covariate(adata, setup, assert_unchanged, value):
    adata.obs.loc[adata.obs_names[3], "age"] = value
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, batch_key="batch", continuous_covariate_keys=["age"]),
        ValueError,
        r"adata.obs\['age'\] holds NaN or infinite values",
    )


def test_bad_size_factor(adata, setup, assert_unchanged):
    adata.obs["size_factor"] = "big"
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, batch_key="batch", size_factor_key="size_factor"),
        ValueError,
        r"adata.obs\['size_factor'\] must be numeric",
    )
    adata.obs["size_factor"] = np.nan
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, batch_key="batch", size_factor_key="size_factor"),
        ValueError,
        r"adata.obs\['size_factor'\] holds NaN",
    )


# Rollback of earlier fields -----------------------------------------------------------------


def test_later_missing_labels_rolls_back_batch(adata, setup, assert_unchanged):
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(adata, batch_key="batch", labels_key="cell_type"),
        KeyError,
        r"labels_key: 'cell_type'",
    )
    assert "_scvi_batch" not in adata.obs
    assert SETUP_UUID_KEY not in adata.uns and MANAGER_UUID_KEY not in adata.uns


def test_later_bad_covariate_rolls_back_everything(adata, setup, assert_unchanged):
    adata.obs["pct_mito"] = adata.obs["pct_mito"].astype(str)
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(
            adata,
            batch_key="batch",
            labels_key="labels",
            categorical_covariate_keys=["donor", "site"],
            continuous_covariate_keys=["age", "pct_mito"],
        ),
        ValueError,
        r"adata.obs\['pct_mito'\] must be numeric",
    )
    assert not [c for c in adata.obs.columns if c.startswith("_scvi_")]
    assert not [k for k in adata.obsm.keys() if k.startswith("_scvi_")]
    assert SETUP_UUID_KEY not in adata.uns


def test_later_bad_proteins_roll_back_covariates(adata, setup, assert_unchanged):
    adata.obsm["protein_expression"][0, 0] = -5
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(
            adata,
            batch_key="batch",
            categorical_covariate_keys=["donor"],
            continuous_covariate_keys=["age"],
            protein_key="protein_expression",
        ),
        ValueError,
        r"negative values",
    )
    assert "_scvi_extra_categorical_covs" not in adata.obsm
    assert "_scvi_extra_continuous_covs" not in adata.obsm


def test_failed_resetup_restores_previous_registration(adata, setup, assert_unchanged):
    first = setup(
        adata, batch_key="batch", labels_key="labels", categorical_covariate_keys=["donor"]
    )
    uuid = adata.uns[SETUP_UUID_KEY]
    # The new setup writes batch=None codes (all 0) and new covariates before failing.
    expect_failure(
        adata,
        assert_unchanged,
        lambda: setup(
            adata,
            batch_key=None,
            labels_key="labels",
            categorical_covariate_keys=["site"],
            continuous_covariate_keys=["nope"],
        ),
        KeyError,
        r"'nope' is not a key of adata.obs",
    )
    assert set(adata.obs["_scvi_batch"]) == {0, 1}
    assert adata.uns[MANAGER_UUID_KEY] == first.id and adata.uns[SETUP_UUID_KEY] == uuid
    assert list(adata.obsm["_scvi_extra_categorical_covs"].columns) == ["donor"]
    first.validate()  # still valid: nothing to replay
    np.testing.assert_array_equal(
        first.get_from_registry("batch")[:, 0], adata.obs["batch"].cat.codes.to_numpy()
    )


# Failing transfer and replay ----------------------------------------------------------------


@pytest.mark.parametrize("problem", ["unseen", "genes", "missing_key", "negative"])
def test_failing_transfer_leaves_target_unchanged(
    adata, make_adata, setup, assert_unchanged, problem
):
    manager = setup(
        adata, batch_key="batch", labels_key="labels", protein_key="protein_expression"
    )
    target = make_adata(seed=21)
    target.uns[SETUP_UUID_KEY] = "target-uuid"  # a target set up before keeps its identity
    if problem == "unseen":
        target.obs["labels"] = ["Mono"] + list(target.obs["labels"][1:])
        error, match = ValueError, r"\['Mono'\].*extend_categories"
    elif problem == "genes":
        target.var_names = list(target.var_names[::-1])
        error, match = ValueError, r"differ from the training genes"
    elif problem == "missing_key":
        del target.obs["labels"]
        error, match = KeyError, r"labels_key: 'labels'"
    else:
        target.obsm["protein_expression"][0, 0] = -1
        error, match = ValueError, r"negative values"
    expect_failure(target, assert_unchanged, lambda: manager.transfer_fields(target), error, match)
    assert adata.uns[MANAGER_UUID_KEY] == manager.id


def test_failing_transfer_over_previous_transfer_restores_it(
    adata, make_adata, setup, assert_unchanged
):
    manager = setup(adata, batch_key="batch", labels_key="labels")
    target = make_adata(seed=21, batches=["b"])
    previous = manager.transfer_fields(target)
    target.obs["labels"] = ["Mono"] + list(target.obs["labels"][1:])
    expect_failure(
        target, assert_unchanged, lambda: manager.transfer_fields(target), ValueError, r"Mono"
    )
    assert target.uns[MANAGER_UUID_KEY] == previous.id
    assert (target.obs["_scvi_batch"] == 1).all()


def test_failing_replay_leaves_adata_unchanged(adata, setup, assert_unchanged):
    first = setup(adata, batch_key="batch")
    second = setup(adata, batch_key=None)
    # A batch the first setup never saw: replaying the first registration must fail cleanly.
    adata.obs["batch"] = pd.Categorical(["c"] + list(adata.obs["batch"][1:].astype(str)))
    expect_failure(
        adata, assert_unchanged, first.validate, ValueError, r"unseen at setup: \['c'\]"
    )
    assert adata.uns[MANAGER_UUID_KEY] == second.id
    assert (adata.obs["_scvi_batch"] == 0).all()


def test_layer_field_transfer_on_non_count_data(adata, assert_unchanged):
    """A non-count layer still rejects NaN on transfer, leaving the target unchanged."""
    manager = AnnDataManager(fields=[LayerField(REGISTRY_KEYS.X_KEY, "normalized", False)])
    manager.register_fields(adata)
    target = adata.copy()
    del target.uns[SETUP_UUID_KEY], target.uns[MANAGER_UUID_KEY]
    target.layers["normalized"][1, 1] = np.nan
    expect_failure(
        target, assert_unchanged, lambda: manager.transfer_fields(target), ValueError, r"holds NaN"
    )


def test_duplicated_obs_names_only_warn(adata, setup, caplog):
    adata.obs_names = ["cell_0"] * 2 + list(adata.obs_names[2:])
    with caplog.at_level(logging.WARNING, logger="cellvi"):
        manager = setup(adata, batch_key="batch")
    assert "obs_names are not unique" in caplog.text
    assert manager.summary_stats.n_cells == 40
