"""Differential expression and abundance: tables, arguments, errors, and known answers.

The known answers use ``cellvi.data.simulate()``: two cell types in two batches, whose true
per-type profiles (``varm["type_profiles"]``) and batch effects (``varm["batch_log_effects"]``)
give the true log fold changes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributions as dist

import cellvi
from cellvi.model import SCVI, CondSCVI
from cellvi.model.base._de_core import _fdr_de_prediction, _prepare_obs
from cellvi.model.base._differential import (
    DifferentialComputation,
    _log_fold_statistics,
    credible_intervals,
    describe_continuous_distrib,
    estimate_delta,
    estimate_pseudocounts_offset,
)

from ._model_helpers import TRAIN_KW

CHANGE_COLUMNS = [
    "proba_de",
    "proba_not_de",
    "bayes_factor",
    "scale1",
    "scale2",
    "pseudocounts",
    "delta",
    "lfc_mean",
    "lfc_median",
    "lfc_std",
    "lfc_min",
    "lfc_max",
]
RAW_COLUMNS = [
    "raw_mean1",
    "raw_mean2",
    "non_zeros_proportion1",
    "non_zeros_proportion2",
    "raw_normalized_mean1",
    "raw_normalized_mean2",
]


@pytest.fixture(scope="module")
def iid_model():
    cellvi.settings.seed = 0
    try:
        adata = cellvi.data.synthetic_iid(n_genes=40)
        SCVI.setup_anndata(adata, batch_key="batch", labels_key="labels")
        model = SCVI(adata, n_latent=5)
        model.train(max_epochs=2, **TRAIN_KW)
    finally:
        cellvi.settings.seed = None
    return model, adata


@pytest.fixture(scope="module")
def simulated_model():
    """SCVI trained on two simulated types in two batches with strong effects."""
    adata = cellvi.data.simulate(
        n_cells=1600,
        n_genes=120,
        n_batches=2,
        n_cell_types=2,
        marker_fraction=0.3,
        type_effect_strength=1.5,
        batch_effect_strength=0.8,
        library_log_mean=8.0,
        seed=3,
    )
    cellvi.settings.seed = 0
    try:
        SCVI.setup_anndata(adata, batch_key="batch")
        model = SCVI(adata, n_latent=5, gene_likelihood="nb")
        model.train(max_epochs=60, batch_size=256, **TRAIN_KW)
    finally:
        cellvi.settings.seed = None
    return model, adata


# Tables -----------------------------------------------------------------------------------------


def test_vanilla_table(iid_model):
    model, adata = iid_model
    table = model.differential_expression(groupby="labels", silent=True)
    assert table.shape == (3 * adata.n_vars, 14)
    assert list(table.columns) == [
        "proba_m1",
        "proba_m2",
        "bayes_factor",
        "scale1",
        "scale2",
        *RAW_COLUMNS,
        "comparison",
        "group1",
        "group2",
    ]
    assert set(table["comparison"]) == {f"label_{i} vs Rest" for i in range(3)}
    one = table[table["group1"] == "label_0"]
    assert set(one.index) == set(adata.var_names)
    assert one["bayes_factor"].is_monotonic_decreasing
    np.testing.assert_allclose(one["proba_m1"] + one["proba_m2"], 1.0)
    assert one["proba_m1"].dtype == np.float64 and one["scale1"].dtype == np.float32


def test_change_table(iid_model):
    model, adata = iid_model
    table = model.differential_expression(
        groupby="labels", group1="label_1", group2="label_2", mode="change", silent=True
    )
    assert list(table.columns) == [
        *CHANGE_COLUMNS,
        *RAW_COLUMNS,
        "is_de_fdr_0.05",
        "comparison",
        "group1",
        "group2",
    ]
    assert table["proba_de"].is_monotonic_decreasing
    assert (table["comparison"] == "label_1 vs label_2").all()
    assert table["is_de_fdr_0.05"].dtype == bool
    assert (table["delta"] == 0.25).all()
    lfc = table[["lfc_min", "lfc_median", "lfc_max"]].to_numpy()
    assert (lfc[:, 0] <= lfc[:, 1]).all() and (lfc[:, 1] <= lfc[:, 2]).all()
    # raw statistics of the two groups
    cells1 = (adata.obs["labels"] == "label_1").to_numpy()
    np.testing.assert_allclose(
        table.loc[adata.var_names, "raw_mean1"], np.asarray(adata.X[cells1].mean(0)).ravel()
    )


def test_change_options(iid_model):
    model, _ = iid_model
    table = model.differential_expression(
        idx1="labels == 'label_1'",
        mode="change",
        delta=None,
        fdr_target=0.1,
        cred_interval_lvls=[0.5, 0.9],
        test_mode="two",
        pseudocounts=1e-4,
        n_samples_overall=500,
        silent=True,
    )
    assert "is_de_fdr_0.1" in table and "comparison" not in table
    assert "lfc_confidence_interval_0.5_min" in table
    assert (table["lfc_confidence_interval_0.9_min"] <= table["lfc_median"] + 1e-6).all()
    assert (table["pseudocounts"] == 1e-4).all() and (table["delta"] >= 0.1).all()


def test_index_sets_and_weights(iid_model):
    model, adata = iid_model
    for kwargs in (
        {"idx1": [0, 1, 2], "idx2": [3, 4, 5]},
        {"idx1": [0, 1, 2]},
        {"idx1": [0, 1, 2], "idx2": [3, 4, 5], "weights": "importance"},
        {"idx1": "labels == 'label_1'", "idx2": "(labels == 'label_2') & (batch == 'batch_1')"},
        {"groupby": "labels", "group1": "label_1", "filter_outlier_cells": True},
        {"groupby": "labels", "group1": "label_1", "all_stats": False},
        {"groupby": "labels", "group1": ["label_0", "label_1"], "batch_correction": True},
        {
            "groupby": "labels",
            "group1": "label_0",
            "batch_correction": True,
            "batchid1": ["batch_0"],
            "batchid2": ["batch_0"],
        },
    ):
        table = model.differential_expression(silent=True, **kwargs)
        assert len(table) % adata.n_vars == 0 and table["bayes_factor"].notna().all()
    mask = np.zeros(adata.n_obs, dtype=bool)
    mask[:50] = True
    assert len(model.differential_expression(idx1=mask, idx2=~mask, silent=True)) == 40


def test_integer_and_string_groups(iid_model):
    model, adata = iid_model
    adata.obs["test"] = [0] * 200 + [1] * 200
    assert len(model.differential_expression(groupby="test", group1=0, silent=True)) == 40
    adata.obs["test"] = ["0"] * 200 + ["1"] * 200
    assert len(model.differential_expression(groupby="test", group1="0", silent=True)) == 40
    del adata.obs["test"]


def test_bad_input_is_a_clear_error(iid_model):
    model, adata = iid_model
    with pytest.raises(ValueError, match="groupby"):
        model.differential_expression()
    with pytest.raises(KeyError, match="not a column"):
        model.differential_expression(groupby="no_column")
    with pytest.raises(ValueError, match="not in adata.obs"):
        model.differential_expression(groupby="labels", group1="label_9")
    with pytest.raises(ValueError, match="not in adata.obs"):
        model.differential_expression(groupby="labels", group1="label_1", group2="label_9")
    with pytest.raises(ValueError, match="selects no cells"):
        model.differential_expression(idx1=[], idx2=[1, 2])
    with pytest.raises(ValueError, match="share 1 cells"):
        model.differential_expression(idx1=[0, 1], idx2=[1, 2])
    with pytest.raises(ValueError, match="single group"):
        model.differential_expression(adata[:20], groupby="batch")
    with pytest.raises(ValueError, match="mode"):
        model.differential_expression(groupby="labels", mode="bayes")


def test_prepare_obs_and_fdr():
    adata = cellvi.data.synthetic_iid()
    labels, group1, group2 = _prepare_obs(
        "(labels == 'label_1') & (batch == 'batch_1')", None, adata
    )
    expected = ((adata.obs.labels == "label_1") & (adata.obs.batch == "batch_1")).sum()
    assert (labels == group1).sum() == expected and group2 is None
    probas = pd.Series([0.99, 0.2, 0.97, 0.9], index=list("abcd"))
    flags = _fdr_de_prediction(probas, fdr=0.05)
    assert flags.to_dict() == {"a": True, "b": False, "c": True, "d": True}


def test_estimators():
    rng = np.random.default_rng(0)
    means = np.concatenate([rng.normal(0, 1, 100), rng.normal(3, 1, 100), rng.normal(-3, 1, 100)])
    assert 1.2 <= estimate_delta(means) <= 6
    scales_a, scales_b = rng.random((100, 50)), rng.random((100, 50))
    zero_a, zero_b = np.zeros(50, bool), np.zeros(50, bool)
    zero_a[:10], zero_b[-10:] = True, True
    scales_a[:, :10], scales_b[:, -10:] = 1e-6, 1e-7
    assert estimate_pseudocounts_offset(scales_a, scales_b, zero_a, zero_b) <= 1e-3
    samples = rng.normal(size=(4000, 2))
    low, high = credible_intervals(samples, confidence_level=0.95).T
    np.testing.assert_allclose(low, -1.96, atol=0.15)
    np.testing.assert_allclose(high, 1.96, atol=0.15)


def test_fast_change_statistics_equal_numpy():
    """The piecewise torch statistics are numpy's formulas (scvi-tools' definitions)."""
    rng = np.random.default_rng(1)
    scales_1 = rng.dirichlet(np.ones(600), size=1000).astype(np.float32)
    scales_2 = rng.dirichlet(np.ones(600), size=1000).astype(np.float32)
    pseudocounts, delta = 1e-4, 0.3
    plus, minus, _, summaries = _log_fold_statistics(
        scales_1, scales_2, pseudocounts, delta, [0.8]
    )
    effects = np.log2(scales_1 + pseudocounts) - np.log2(scales_2 + pseudocounts)
    np.testing.assert_allclose(plus, np.mean(effects >= delta, 0), atol=2e-3)
    np.testing.assert_allclose(minus, np.mean(effects < -delta, 0), atol=2e-3)
    fold = np.log2(scales_1 + 1e-3 * pseudocounts) - np.log2(scales_2 + 1e-3 * pseudocounts)
    reference = describe_continuous_distrib(fold, [0.8])
    for name, values in reference.items():
        np.testing.assert_allclose(summaries[name], values, rtol=1e-4, atol=1e-4, err_msg=name)


def test_differential_computation_custom_functions(iid_model):
    model, adata = iid_model
    computation = DifferentialComputation(
        lambda *a, **k: model.get_normalized_expression(*a, return_numpy=True, **k),
        model.get_latent_representation,
        model.adata_manager,
    )
    cells1 = (adata.obs["labels"] == "label_1").to_numpy()
    result = computation.get_bayes_factors(cells1, ~cells1, mode="change", pseudocounts=0.0)
    assert result["delta"] == 0.5 and result["pseudocounts"] == 0.0
    result = computation.get_bayes_factors(
        cells1,
        ~cells1,
        mode="change",
        change_fn=lambda x, y, pseudocount=0.0: x - y,
        m1_domain_fn=lambda samples: (samples >= 0.001, samples < -0.001),
    )
    assert result["proba_de"].shape == (adata.n_vars,)
    vanilla = computation.get_bayes_factors(cells1, ~cells1, mode="vanilla", use_permutation=True)
    assert vanilla["proba_m1"].shape == (adata.n_vars,)
    with pytest.raises(ValueError, match="three parameters"):
        computation.get_bayes_factors(cells1, ~cells1, change_fn=lambda x, y: x - y)


def test_condscvi_differential_expression():
    adata = cellvi.data.synthetic_iid(n_genes=30)
    CondSCVI.setup_anndata(adata, labels_key="labels", batch_key="batch")
    model = CondSCVI(adata)
    model.train(max_epochs=1, **TRAIN_KW)
    table = model.differential_expression(groupby="labels", group1="label_1", silent=True)
    assert len(table) == 30
    table = model.differential_expression(
        groupby="labels", group1="label_1", group2="label_2", mode="change", silent=True
    )
    assert table["proba_de"].between(0, 1).all()


# Known answers ----------------------------------------------------------------------------------


def _true_lfc(adata) -> np.ndarray:
    profiles = adata.varm["type_profiles"]
    return np.log2(profiles[:, 0] / profiles[:, 1])


def test_planted_fold_changes_are_recovered(simulated_model):
    model, adata = simulated_model
    table = model.differential_expression(
        groupby="cell_type", group1="type_0", group2="type_1", mode="change", silent=True
    ).loc[adata.var_names]
    truth = _true_lfc(adata)
    estimate = table["lfc_mean"].to_numpy()
    assert np.corrcoef(truth, estimate)[0, 1] > 0.9
    strong = np.abs(truth) > 1.5
    assert np.mean(np.sign(estimate[strong]) == np.sign(truth[strong])) > 0.95
    slope = np.polyfit(truth[strong], estimate[strong], 1)[0]
    assert 0.6 < slope < 1.4  # the size too, not only the sign
    called = table["is_de_fdr_0.05"].to_numpy()
    assert called.sum() > 0 and np.mean(np.abs(truth[called]) > 0.25) > 0.8


def test_identical_groups_give_no_calls(simulated_model):
    model, adata = simulated_model
    cells = np.flatnonzero((adata.obs["cell_type"] == "type_0").to_numpy())
    rng = np.random.default_rng(0)
    rng.shuffle(cells)
    half = len(cells) // 2
    table = model.differential_expression(
        idx1=cells[:half], idx2=cells[half:], mode="change", silent=True
    )
    assert table["is_de_fdr_0.05"].mean() <= 0.02
    assert table["lfc_mean"].abs().median() < 0.1


def test_batch_correction_removes_batch_effects(simulated_model):
    """The same type in two batches: observed batches show the batch effect, and decoding
    both in the same batches removes it."""
    model, adata = simulated_model
    type_0 = adata.obs["cell_type"] == "type_0"
    idx1 = (type_0 & (adata.obs["batch"] == "batch_0")).to_numpy()
    idx2 = (type_0 & (adata.obs["batch"] == "batch_1")).to_numpy()
    effects = adata.varm["batch_log_effects"]
    batch_lfc = (effects[:, 0] - effects[:, 1]) / np.log(2)
    batch_lfc -= np.median(batch_lfc)
    raw = model.differential_expression(idx1=idx1, idx2=idx2, mode="change", silent=True)
    corrected = model.differential_expression(
        idx1=idx1, idx2=idx2, mode="change", batch_correction=True, silent=True
    )
    raw_lfc = raw.loc[adata.var_names, "lfc_mean"].to_numpy()
    corrected_lfc = corrected.loc[adata.var_names, "lfc_mean"].to_numpy()
    assert np.corrcoef(raw_lfc, batch_lfc)[0, 1] > 0.8
    # what remains is the batch signal the latent space kept, not the decoder's batch effect
    assert np.abs(corrected_lfc).mean() < 0.7 * np.abs(raw_lfc).mean()
    assert np.corrcoef(corrected_lfc, batch_lfc)[0, 1] < np.corrcoef(raw_lfc, batch_lfc)[0, 1]
    assert corrected["is_de_fdr_0.05"].sum() < raw["is_de_fdr_0.05"].sum()


# Differential abundance -------------------------------------------------------------------------


def test_aggregated_posterior(iid_model):
    model, adata = iid_model
    for kwargs in ({}, {"indices": np.array([])}, {"indices": np.arange(50), "dof": None}):
        posterior = model.get_aggregated_posterior(adata, **kwargs)
        assert isinstance(posterior, dist.MixtureSameFamily)
    posterior = model.get_aggregated_posterior(indices=np.arange(50), dof=5)
    latent = model.get_latent_representation(indices=np.arange(50))
    log_prob = posterior.log_prob(torch.as_tensor(latent))
    assert log_prob.shape == (50,) and bool(log_prob.isfinite().all())


def test_differential_abundance(iid_model):
    model, adata = iid_model
    adata.obs["sample"] = np.repeat(["a", "b", "c", "d"], 100)
    model.differential_abundance(adata, sample_key="sample", num_cells_posterior=50, dof=3)
    log_probs = adata.obsm["da_log_probs"]
    assert isinstance(log_probs, pd.DataFrame) and list(log_probs.columns) == list("abcd")
    assert log_probs.shape == (adata.n_obs, 4) and np.isfinite(log_probs.to_numpy()).all()
    with pytest.raises(KeyError):
        model.differential_abundance(adata, sample_key=None)
    del adata.obs["sample"]
