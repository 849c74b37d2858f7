"""Minified SCANVI: labels, latent and expression from the stored posterior, without counts.

Given the same posterior draws, a minified SCANVI must answer as the full one: the latent
representation and the predictions (the classifier reads the posterior mean) exactly, the
decoded expression to float precision; it must save and load as minified, and refuse training
and ``from_scvi_model`` on data without counts with scvi-tools' messages.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cellvi
from cellvi import REGISTRY_KEYS
from cellvi.data._constants import _ADATA_MINIFY_TYPE_UNS_KEY, ADATA_MINIFY_TYPE
from cellvi.model import SCANVI, SCVI

from ._model_helpers import TRAIN_KW
from .test_minified import _decoded, minified_round_trip

UNLABELED = "label_0"


def _store_posterior(model: SCVI | SCANVI) -> None:
    qzm, qzv = model.get_latent_representation(return_dist=True)
    model.adata.obsm["X_latent_qzm"], model.adata.obsm["X_latent_qzv"] = qzm, qzv


def _trained_scanvi(layer: str | None = None) -> SCANVI:
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid(batch_size=60, n_genes=30, seed=0)
    if layer is not None:
        adata.layers[layer] = adata.X.copy()
        adata.X = np.zeros_like(adata.X)
    SCANVI.setup_anndata(adata, "labels", UNLABELED, layer=layer, batch_key="batch")
    model = SCANVI(adata, n_hidden=16, n_latent=3)
    model.train(max_epochs=2, **TRAIN_KW)
    cellvi.settings.seed = None
    _store_posterior(model)
    return model


def _expression(model: SCANVI, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    return model.get_normalized_expression(return_numpy=True)


def _drawn_labels(model: SCANVI, seed: int) -> np.ndarray:
    """Label probabilities of one posterior draw per cell."""
    torch.manual_seed(seed)
    return model.predict(soft=True, use_posterior_mean=False).to_numpy()


@pytest.mark.parametrize("layer", [None, "counts"])
def test_a_minified_scanvi_answers_as_the_full_one(layer):
    model = _trained_scanvi(layer)
    full_adata = model.adata
    latent = model.get_latent_representation()
    labels, soft = model.predict(), model.predict(soft=True)
    decoded, expression = _decoded(model, seed=5), _expression(model, seed=5)
    drawn = _drawn_labels(model, seed=6)
    model.minify_adata()
    assert model.minified_data_type == ADATA_MINIFY_TYPE.LATENT_POSTERIOR
    assert model.module.minified_data_type == ADATA_MINIFY_TYPE.LATENT_POSTERIOR
    assert model.adata is not full_adata and model.adata.X.nnz == 0
    np.testing.assert_array_equal(model.get_latent_representation(), latent)
    np.testing.assert_array_equal(model.predict(), labels)
    np.testing.assert_allclose(model.predict(soft=True), soft, rtol=1e-6)
    minified = _decoded(model, seed=5)
    np.testing.assert_array_equal(minified["z"], decoded["z"])
    np.testing.assert_allclose(minified["scale"], decoded["scale"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_expression(model, seed=5), expression, rtol=1e-5, atol=1e-7)
    # A stochastic prediction draws from the stored posterior: the full model's draws.
    np.testing.assert_allclose(_drawn_labels(model, seed=6), drawn, rtol=1e-5, atol=1e-7)


def test_a_minified_scanvi_saves_and_loads_as_such(tmp_path):
    model = _trained_scanvi()
    labels, latent = model.predict(), model.get_latent_representation()
    loaded = minified_round_trip(model, tmp_path / "minified")
    np.testing.assert_array_equal(loaded.predict(), labels)
    np.testing.assert_array_equal(loaded.get_latent_representation(), latent)
    # The model's setup registers minified data as such, unless asked not to.
    assert loaded.adata_manager.registry["setup_args"]["use_minified"] is True
    plain = loaded.adata.copy()
    SCANVI.setup_anndata(plain, "labels", UNLABELED, batch_key="batch", use_minified=False)
    registered = SCANVI._get_most_recent_anndata_manager(plain).data_registry
    assert REGISTRY_KEYS.LATENT_QZM_KEY not in registered


def test_a_minified_scanvi_refuses_what_needs_counts():
    model = _trained_scanvi()
    model.minify_adata()
    with pytest.raises(ValueError, match="SCANVAE.loss function currently does not support"):
        model.train(max_epochs=1, **TRAIN_KW)
    for query in ("get_elbo", "get_reconstruction_error"):
        with pytest.raises(ValueError, match=f"VAEMixin.{query} function currently does not"):
            getattr(model, query)()


def test_from_scvi_model_needs_counts(tmp_path):
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid(batch_size=60, n_genes=30, seed=0)
    SCVI.setup_anndata(adata, batch_key="batch", labels_key="labels")
    scvi_model = SCVI(adata, n_hidden=16, n_latent=3)
    scvi_model.train(max_epochs=1, **TRAIN_KW)
    cellvi.settings.seed = None
    _store_posterior(scvi_model)
    pretend = adata.copy()
    pretend.uns[_ADATA_MINIFY_TYPE_UNS_KEY] = ADATA_MINIFY_TYPE.LATENT_POSTERIOR
    with pytest.raises(ValueError, match=r"^Please provide a non-minified `adata`"):
        SCANVI.from_scvi_model(scvi_model, UNLABELED, adata=pretend)
    scvi_model.save(tmp_path / "full")
    with_counts = SCVI.load(tmp_path / "full", adata=adata.copy(), accelerator="cpu")
    scvi_model.minify_adata()
    with pytest.raises(ValueError, match="because it has minified adata. Keep counts when"):
        SCANVI.from_scvi_model(scvi_model, UNLABELED)
    # Minified with its counts kept, a scVI model still starts a SCANVI one, on plain data.
    with_counts.minify_adata(minified_data_type=ADATA_MINIFY_TYPE.LATENT_POSTERIOR_WITH_COUNTS)
    scanvi = SCANVI.from_scvi_model(with_counts, UNLABELED)
    assert scanvi.minified_data_type is None and scanvi.module.minified_data_type is None
    scanvi.train(max_epochs=1, **TRAIN_KW)
