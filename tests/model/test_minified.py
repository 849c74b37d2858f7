"""Minified models: answers from the stored latent posterior, without the counts.

A minified model must give the full model's latent representation exactly and, given the same
posterior draws, the same decoded expression; save and load as minified; and refuse what
needs counts with a clear message.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy import sparse

import cellvi
from cellvi.data._constants import _ADATA_MINIFY_TYPE_UNS_KEY, ADATA_MINIFY_TYPE
from cellvi.data._utils import _is_minified
from cellvi.model import SCVI
from cellvi.model.base import BaseMinifiedModeModelClass
from cellvi.module._constants import MODULE_KEYS

from ._model_helpers import TRAIN_KW


def _trained(layer: str | None = None, **model_kwargs) -> SCVI:
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid(batch_size=60, n_genes=30)
    if layer is not None:
        adata.layers[layer] = adata.X.copy()
        adata.X = np.zeros_like(adata.X)
    SCVI.setup_anndata(adata, layer=layer, batch_key="batch", labels_key="labels")
    model = SCVI(adata, n_hidden=16, n_latent=3, **model_kwargs)
    model.train(max_epochs=2, **TRAIN_KW)
    cellvi.settings.seed = None
    qzm, qzv = model.get_latent_representation(return_dist=True)
    model.adata.obsm["X_latent_qzm"], model.adata.obsm["X_latent_qzv"] = qzm, qzv
    return model


def _decoded(model: SCVI, seed: int) -> dict[str, np.ndarray]:
    """Posterior draws and the expression decoded from them, for every cell."""
    torch.manual_seed(seed)
    module = model.module
    draws, scales = [], []
    with torch.inference_mode():
        for tensors in model._make_data_loader(batch_size=50):
            inference = module.inference(**module._get_inference_input(tensors))
            generative = module.generative(**module._get_generative_input(tensors, inference))
            draws.append(inference[MODULE_KEYS.Z_KEY])
            scales.append(generative[MODULE_KEYS.PX_KEY].scale)
    return {"z": torch.cat(draws).numpy(), "scale": torch.cat(scales).numpy()}


@pytest.mark.parametrize("layer", [None, "counts"])
def test_a_minified_model_answers_as_the_full_one(layer):
    model = _trained(layer)
    full_adata = model.adata
    latent = model.get_latent_representation()
    full = _decoded(model, seed=3)
    model.minify_adata()
    assert model.minified_data_type == ADATA_MINIFY_TYPE.LATENT_POSTERIOR
    assert model.module.minified_data_type == ADATA_MINIFY_TYPE.LATENT_POSTERIOR
    assert _is_minified(model.adata) and not _is_minified(full_adata)
    assert model.adata is not full_adata and model.adata.shape == full_adata.shape
    for matrix in [model.adata.X, *model.adata.layers.values()]:
        assert sparse.issparse(matrix) and matrix.nnz == 0
    counts = full_adata.layers[layer] if layer else full_adata.X
    np.testing.assert_allclose(
        model.adata.obs[BaseMinifiedModeModelClass._OBSERVED_LIB_SIZE_KEY], counts.sum(axis=1)
    )
    np.testing.assert_array_equal(model.get_latent_representation(), latent)
    minified = _decoded(model, seed=3)
    np.testing.assert_array_equal(minified["z"], full["z"])
    np.testing.assert_allclose(minified["scale"], full["scale"], rtol=1e-5, atol=1e-7)


def minified_round_trip(model: BaseMinifiedModeModelClass, directory) -> Any:
    """Minify ``model``, save it with its data, and load it: minified, without counts."""
    model.minify_adata()
    model.save(directory, save_anndata=True)
    loaded = type(model).load(directory, accelerator="cpu")
    assert loaded.minified_data_type == ADATA_MINIFY_TYPE.LATENT_POSTERIOR
    assert loaded.module.minified_data_type == ADATA_MINIFY_TYPE.LATENT_POSTERIOR
    assert loaded.adata.X.nnz == 0
    return loaded


def test_minified_models_save_and_load_as_such(tmp_path):
    model = _trained()
    latent = model.get_latent_representation()
    full_adata = model.adata.copy()
    loaded = minified_round_trip(model, tmp_path / "minified")
    np.testing.assert_array_equal(loaded.get_latent_representation(), latent)
    # With the minified data given explicitly, and with full data: the model follows them.
    again = SCVI.load(tmp_path / "minified", adata=model.adata.copy(), accelerator="cpu")
    assert again.minified_data_type == ADATA_MINIFY_TYPE.LATENT_POSTERIOR
    full = SCVI.load(tmp_path / "minified", adata=full_adata, accelerator="cpu")
    assert full.minified_data_type is None and full.module.minified_data_type is None
    np.testing.assert_allclose(full.get_latent_representation(), latent, rtol=1e-6)


def test_what_needs_counts_is_refused():
    model = _trained()
    model.minify_adata()
    for query in ("get_elbo", "get_reconstruction_error", "get_marginal_ll"):
        with pytest.raises(ValueError, match=f"VAEMixin.{query} function currently does not"):
            getattr(model, query)()
    with pytest.raises(ValueError, match="RNASeqMixin.get_latent_library_size function"):
        model.get_latent_library_size(give_mean=False)
    with pytest.raises(ValueError, match="VAE.loss function currently does not support"):
        model.train(max_epochs=1, **TRAIN_KW)


def test_minified_with_counts_keeps_them_and_still_trains():
    model = _trained()
    elbo = model.get_elbo()
    model.minify_adata(minified_data_type=ADATA_MINIFY_TYPE.LATENT_POSTERIOR_WITH_COUNTS)
    assert model.minified_data_type == ADATA_MINIFY_TYPE.LATENT_POSTERIOR_WITH_COUNTS
    assert model.adata.X.sum() > 0
    # The latent posterior is the stored one, drawn from (not encoded) for the ELBO.
    assert torch.isfinite(model.get_elbo()) and abs(float(model.get_elbo() - elbo)) < 50


def test_bad_minification_requests():
    model = _trained()
    with pytest.raises(NotImplementedError, match="not supported"):
        model.minify_adata(minified_data_type="counts_only")
    with pytest.raises(KeyError, match="X_other"):
        model.minify_adata(use_latent_qzm_key="X_other")
    learnt = _trained(use_observed_lib_size=False)
    with pytest.raises(ValueError, match="observed library size"):
        learnt.minify_adata()


def test_a_full_model_refuses_data_without_counts(tmp_path):
    model = _trained()
    model.save(tmp_path / "full", save_anndata=True)
    model.minify_adata()
    with pytest.raises(ValueError, match="non-minified model with minified adata"):
        SCVI.load(tmp_path / "full", adata=model.adata)
    # Unless the data hold a posterior to minify them with afterwards (scvi-tools' rule).
    data = model.adata.copy()
    del data.uns[_ADATA_MINIFY_TYPE_UNS_KEY]
    data.obsm["_scvi_latent_qzm"] = data.obsm["X_latent_qzm"]
    data.obsm["_scvi_latent_qzv"] = data.obsm["X_latent_qzv"]
    loaded = SCVI.load(tmp_path / "full", adata=data, accelerator="cpu")
    loaded.minify_adata(
        use_latent_qzm_key="_scvi_latent_qzm", use_latent_qzv_key="_scvi_latent_qzv"
    )
    assert loaded.minified_data_type == ADATA_MINIFY_TYPE.LATENT_POSTERIOR
