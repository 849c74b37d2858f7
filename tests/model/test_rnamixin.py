"""RNASeqMixin on SCVI and CondSCVI: normalized expression, posterior predictive draws,
likelihood parameters, library sizes and feature correlations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import cellvi
from cellvi.model import SCVI, CondSCVI
from cellvi.module._constants import MODULE_KEYS

from ._model_helpers import TRAIN_KW


def _trained(model_cls, seed: int = 0, **model_kwargs):
    cellvi.settings.seed = seed
    try:
        adata = cellvi.data.synthetic_iid()
        if model_cls is CondSCVI:
            CondSCVI.setup_anndata(adata, labels_key="labels", batch_key="batch")
        else:
            SCVI.setup_anndata(adata, batch_key="batch", labels_key="labels")
        model = model_cls(adata, **model_kwargs)
        model.train(max_epochs=2, **TRAIN_KW)
    finally:
        cellvi.settings.seed = None
    return model, adata


@pytest.fixture(scope="module")
def scvi_model():
    return _trained(SCVI)


@pytest.fixture(scope="module")
def condscvi_model():
    return _trained(CondSCVI)


# get_normalized_expression --------------------------------------------------------------------


def test_normalized_expression_frame(scvi_model):
    model, adata = scvi_model
    frame = model.get_normalized_expression()
    assert isinstance(frame, pd.DataFrame)
    assert frame.shape == adata.shape
    assert list(frame.columns) == list(adata.var_names)
    assert list(frame.index) == list(adata.obs_names)
    assert (frame.dtypes == np.float32).all()
    # normalized expression is a composition of genes
    np.testing.assert_allclose(frame.to_numpy().sum(1), 1.0, rtol=1e-4)


def test_normalized_expression_options(scvi_model):
    model, adata = scvi_model
    subset = model.get_normalized_expression(indices=[3, 1, 2], gene_list=["gene_5", "gene_2"])
    assert list(subset.index) == list(adata.obs_names[[3, 1, 2]])
    assert list(subset.columns) == ["gene_2", "gene_5"]  # adata.var_names order
    draws = model.get_normalized_expression(indices=[0, 1], n_samples=4, return_mean=False)
    assert isinstance(draws, np.ndarray) and draws.shape == (4, 2, adata.n_vars)
    mean = model.get_normalized_expression(indices=[0, 1], n_samples=4, return_numpy=True)
    assert isinstance(mean, np.ndarray) and mean.shape == (2, adata.n_vars)
    with pytest.warns(UserWarning, match="return_numpy"):
        model.get_normalized_expression(n_samples=2, return_mean=False, return_numpy=False)
    mask = np.zeros(adata.n_obs, dtype=bool)
    mask[[5, 7]] = True
    assert model.get_normalized_expression(indices=mask).shape == (2, adata.n_vars)


def test_library_size_scales_and_latent(scvi_model):
    model, adata = scvi_model
    cellvi.settings.seed = 3
    unit = model.get_normalized_expression(indices=[0, 1, 2], return_numpy=True)
    cellvi.settings.seed = 3
    scaled = model.get_normalized_expression(
        indices=[0, 1, 2], library_size=1e4, return_numpy=True
    )
    np.testing.assert_allclose(scaled, 1e4 * unit, rtol=1e-5)
    # "latent": the mean counts at each cell's observed library size
    latent = model.get_normalized_expression(indices=[0, 1, 2], library_size="latent")
    totals = np.asarray(adata.X[:3].sum(1)).ravel()
    np.testing.assert_allclose(latent.to_numpy().sum(1), totals, rtol=1e-3)


def test_normalized_expression_matches_a_monte_carlo_average(scvi_model):
    """A cell's expression is the average of px.scale over latent draws from q(z|x)."""
    model, adata = scvi_model
    module = model.module
    tensors = next(iter(model._make_data_loader(indices=[7], batch_size=1)))
    cellvi.settings.seed = 11
    with torch.inference_mode():
        qz = module.inference(**module._get_inference_input(tensors))[MODULE_KEYS.QZ_KEY]
        z = qz.sample((4000,))
        library = torch.log(tensors["X"].sum(-1, keepdim=True)).expand(4000, 1, 1)
        px = module.generative(z, library, batch_index=tensors["batch"], y=tensors["labels"])[
            MODULE_KEYS.PX_KEY
        ]
        by_hand = px.scale.mean(0).numpy().ravel()
    cellvi.settings.seed = 12
    queried = model.get_normalized_expression(indices=[7], n_samples=4000).to_numpy().ravel()
    cellvi.settings.seed = None
    # Monte Carlo error of 4000 draws is well below 2% of each gene's expression here
    np.testing.assert_allclose(queried, by_hand, rtol=0.02, atol=1e-5)


def test_transform_batch(scvi_model):
    model, adata = scvi_model
    own = model.get_normalized_expression(indices=np.arange(200, 205), return_numpy=True)
    as_0 = model.get_normalized_expression(
        indices=np.arange(200, 205), transform_batch="batch_0", return_numpy=True
    )
    assert not np.allclose(own, as_0)  # cells 200.. are batch_1
    cellvi.settings.seed = 5
    as_0 = model.get_normalized_expression(
        indices=np.arange(200, 205), transform_batch="batch_0", return_numpy=True
    )
    cellvi.settings.seed = 5
    code = model.get_normalized_expression(
        indices=np.arange(200, 205), transform_batch=0, return_numpy=True
    )
    cellvi.settings.seed = None
    np.testing.assert_array_equal(code, as_0)  # a batch's code names the same batch
    both = model.get_normalized_expression(
        indices=[0, 1], transform_batch=["batch_0", "batch_1"], return_numpy=True
    )
    assert both.shape == (2, adata.n_vars)
    with pytest.raises(ValueError, match="not a batch"):
        model.get_normalized_expression(transform_batch="batch_9")


def test_n_samples_overall_and_importance(scvi_model):
    model, adata = scvi_model
    draws = model.get_normalized_expression(indices=[0, 1, 2], n_samples_overall=60)
    assert isinstance(draws, np.ndarray) and draws.shape == (60, adata.n_vars)
    assert draws.dtype == np.float32
    weighted = model.get_normalized_expression(
        indices=np.arange(10),
        n_samples_overall=40,
        weights="importance",
        n_mc_samples=5,
        n_mc_samples_per_pass=5,
        max_cells=6,
        truncation=True,
    )
    assert weighted.shape == (40, adata.n_vars) and np.isfinite(weighted).all()
    with pytest.raises(TypeError, match="importance weighting takes"):
        model.get_normalized_expression(n_samples_overall=5, weights="importance", bogus=1)
    with pytest.raises(NotImplementedError):
        model.get_normalized_expression(
            n_samples_overall=5, weights="importance", transform_batch=["batch_0", "batch_1"]
        )


def test_normalized_expression_with_a_dataloader(scvi_model):
    model, adata = scvi_model
    loader = model._make_data_loader(indices=np.arange(20), batch_size=8)
    values = model.get_normalized_expression(dataloader=loader)
    assert isinstance(values, np.ndarray) and values.shape == (20, adata.n_vars)
    with pytest.raises(ValueError, match="either adata or a dataloader"):
        model.get_normalized_expression(adata, dataloader=loader)


def test_bad_arguments(scvi_model):
    model, _ = scvi_model
    with pytest.raises(ValueError, match="not in adata.var_names"):
        model.get_normalized_expression(gene_list=["gene_1", "no_such_gene"])
    with pytest.raises(ValueError, match="positive integer"):
        model.get_normalized_expression(n_samples=0)
    with pytest.raises(ValueError, match="weights"):
        model.get_normalized_expression(weights="bad")


@pytest.mark.parametrize("likelihood", ["zinb", "nb", "poisson", "normal"])
def test_every_likelihood(likelihood):
    model, adata = _trained(SCVI, gene_likelihood=likelihood)
    frame = model.get_normalized_expression(n_samples=2)
    assert frame.shape == adata.shape and np.isfinite(frame.to_numpy()).all()
    np.testing.assert_allclose(frame.to_numpy().sum(1), 1.0, rtol=1e-4)
    params = model.get_likelihood_parameters(indices=[0, 1, 2])
    expected = {
        "zinb": {"mean", "dispersions", "dropout"},
        "nb": {"mean", "dispersions"},
        "poisson": {"mean"},
        "normal": {"mean", "dispersions"},
    }[likelihood]
    assert set(params) == expected
    assert all(value.shape == (3, adata.n_vars) for value in params.values())
    sparse = pytest.importorskip("sparse")
    draws = model.posterior_predictive_sample(indices=[0, 1], n_samples=3)
    assert isinstance(draws, sparse.GCXS) and draws.shape == (2, adata.n_vars, 3)


# posterior predictive, likelihood parameters, library size, correlations ---------------------


def test_posterior_predictive_sample(scvi_model):
    sparse = pytest.importorskip("sparse")
    model, adata = scvi_model
    draws = model.posterior_predictive_sample()
    assert isinstance(draws, sparse.GCXS) and draws.shape == adata.shape
    dense = draws.todense()
    assert (dense >= 0).all() and np.allclose(dense, np.round(dense))
    subset = model.posterior_predictive_sample(
        indices=[1, 2, 3], gene_list=["gene_1", "gene_2"], n_samples=3
    )
    assert subset.shape == (3, 2, 3)
    averaged = model.posterior_predictive_sample(transform_batch=["batch_1", "batch_0"])
    assert averaged.shape == adata.shape
    # draws are of the data's size (a briefly trained ZINB: loosely)
    observed = np.asarray(adata.X.sum(1)).ravel().mean()
    assert 0.2 < dense.sum(1).mean() / observed < 5.0


def test_likelihood_parameters(scvi_model):
    model, adata = scvi_model
    params = model.get_likelihood_parameters()
    assert set(params) == {"mean", "dispersions", "dropout"}
    assert all(value.shape == adata.shape for value in params.values())
    assert all(value.dtype == np.float32 for value in params.values())
    assert ((params["dropout"] >= 0) & (params["dropout"] <= 1)).all()
    draws = model.get_likelihood_parameters(indices=[1, 2, 3], n_samples=4)
    assert draws["mean"].shape == (4, 3, adata.n_vars)
    mean = model.get_likelihood_parameters(indices=[1, 2, 3], n_samples=4, give_mean=True)
    assert all(value.shape == (3, adata.n_vars) for value in mean.values())


def test_gene_cell_dispersion_parameters():
    model, adata = _trained(SCVI, dispersion="gene-cell")
    params = model.get_likelihood_parameters(n_samples=2, indices=np.arange(10))
    assert params["dispersions"].shape == (2, 10, adata.n_vars)


def test_latent_library_size(scvi_model):
    model, adata = scvi_model
    observed = model.get_latent_library_size(give_mean=False)
    np.testing.assert_allclose(observed.ravel(), np.asarray(adata.X.sum(1)).ravel(), rtol=1e-5)
    with pytest.raises(RuntimeError, match="observed library size"):
        model.get_latent_library_size()
    latent_model, _ = _trained(SCVI, use_observed_lib_size=False)
    sizes = latent_model.get_latent_library_size(indices=[1, 2, 3])
    assert sizes.shape == (3, 1) and (sizes > 0).all()


def test_feature_correlation_matrix(scvi_model):
    model, adata = scvi_model
    for kind in ("spearman", "pearson"):
        matrix = model.get_feature_correlation_matrix(
            indices=np.arange(30), n_samples=3, correlation_type=kind
        )
        assert matrix.shape == (adata.n_vars, adata.n_vars)
        assert list(matrix.index) == list(adata.var_names)
        np.testing.assert_allclose(np.diag(matrix.to_numpy()), 1.0, atol=1e-6)
    averaged = model.get_feature_correlation_matrix(
        indices=[1, 2, 3], n_samples=5, rna_size_factor=500, transform_batch=["batch_0", "batch_1"]
    )
    assert averaged.shape == (adata.n_vars, adata.n_vars)
    with pytest.raises(ValueError, match="correlation type"):
        model.get_feature_correlation_matrix(correlation_type="kendall")


def test_denoised_samples_shapes(scvi_model):
    model, adata = scvi_model
    assert model._get_denoised_samples(indices=[0, 1], n_samples=1).shape == (2, adata.n_vars)
    assert model._get_denoised_samples(indices=[0, 1], n_samples=3).shape == (
        2,
        adata.n_vars,
        3,
    )


# CondSCVI ---------------------------------------------------------------------------------------


def test_condscvi_queries(condscvi_model):
    model, adata = condscvi_model
    frame = model.get_normalized_expression(adata)
    assert frame.shape == adata.shape
    np.testing.assert_allclose(frame.to_numpy().sum(1), 1.0, rtol=1e-4)
    assert model.get_normalized_expression(transform_batch="batch_1").shape == adata.shape
    params = model.get_likelihood_parameters(indices=[0, 1])
    assert set(params) == {"mean", "dispersions"}
    assert model.get_feature_correlation_matrix(indices=np.arange(20), n_samples=2).shape == (
        adata.n_vars,
        adata.n_vars,
    )
    pytest.importorskip("sparse")
    assert model.posterior_predictive_sample(indices=[0, 1]).shape == (2, adata.n_vars)


def test_untrained_model_warns():
    adata = cellvi.data.synthetic_iid()
    SCVI.setup_anndata(adata)
    model = SCVI(adata)
    with pytest.warns(UserWarning, match="not trained"):
        model.get_likelihood_parameters(indices=[0])
    with pytest.raises(RuntimeError, match="not trained"):
        model.get_latent_library_size(give_mean=False)
