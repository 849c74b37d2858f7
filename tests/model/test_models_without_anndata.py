"""Models created from a registry or from nothing, trained on a datamodule (scvi-tools 1.4.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cellvi
from cellvi.dataloaders import AnnDataLoader, DataSplitter, SemiSupervisedDataSplitter
from cellvi.model import SCANVI, SCVI

from ._model_helpers import TRAIN_KW


def _setup(n_batches: int = 3):
    adata = cellvi.data.synthetic_iid(n_batches=n_batches, seed=0)
    SCVI.setup_anndata(adata, batch_key="batch")
    manager = SCVI._get_most_recent_anndata_manager(adata)
    return adata, manager


def test_a_model_without_data_builds_its_module_from_the_datamodule_at_train():
    adata, manager = _setup()
    datamodule = DataSplitter(manager, train_size=0.9)
    datamodule.n_vars, datamodule.n_batch = adata.n_vars, 3
    with pytest.warns(UserWarning, match="datamodule"):
        model = SCVI(adata=None, n_latent=4)
    assert model._module_init_on_train and model.module is None
    with pytest.raises(ValueError, match="n_obs"):
        model.train(datamodule=datamodule, **TRAIN_KW)  # no n_obs: max_epochs unknown
    with pytest.raises(AttributeError, match="datamodule"):
        model.train(max_epochs=1, **TRAIN_KW)
    assert model.module is None  # nothing was built by the failed calls
    model.train(max_epochs=1, datamodule=datamodule, **TRAIN_KW)
    assert model.module.n_latent == 4 and model.module.n_batch == 3
    assert model.is_trained_
    module = model.module
    datamodule.n_obs = 100_000_000  # the default number of epochs is then 1
    model.train(datamodule=datamodule, **TRAIN_KW)
    assert model.module is module  # built once
    assert len(model.history_["elbo_train"]) == 2


def test_a_datamodule_must_say_the_sizes_of_the_module():
    _, manager = _setup()
    with pytest.warns(UserWarning):
        model = SCVI(adata=None)
    with pytest.raises(ValueError, match="n_vars"):
        model.train(max_epochs=1, datamodule=DataSplitter(manager), **TRAIN_KW)


def test_a_model_from_a_registry_has_the_module_of_the_adata_model():
    adata, manager = _setup()
    reference = SCVI(adata, n_latent=4)
    cellvi.settings.seed = 0
    from_registry = SCVI(registry=reference.registry, n_latent=4)
    cellvi.settings.seed = None
    assert not from_registry._module_init_on_train
    assert from_registry.registry_ is reference.registry
    assert from_registry.summary_stats["n_batch"] == 3
    shapes = {name: tensor.shape for name, tensor in reference.module.state_dict().items()}
    assert {n: t.shape for n, t in from_registry.module.state_dict().items()} == shapes
    assert "registry" not in from_registry.init_params_["non_kwargs"]
    datamodule = DataSplitter(manager)
    from_registry.train(max_epochs=1, datamodule=datamodule, **TRAIN_KW)
    assert torch.isfinite(torch.as_tensor(from_registry.history_["elbo_train"].to_numpy())).all()
    with pytest.raises(ValueError, match="use_observed_lib_size"):
        SCVI(registry=reference.registry, use_observed_lib_size=False)


def test_default_train_size_moves_a_lone_cell_to_validation_but_a_chosen_one_refuses():
    adata = cellvi.data.synthetic_iid(seed=0)[:143].copy()  # ceil(0.9 * 143) = 129 = 128 + 1
    SCVI.setup_anndata(adata)
    model = SCVI(adata)
    with pytest.raises(ValueError, match="1 cell"):
        model.train(max_epochs=1, train_size=0.9, **TRAIN_KW)
    with pytest.warns(UserWarning, match="moved"):
        model.train(max_epochs=1, **TRAIN_KW)
    assert model.train_indices.size == 128 and model.validation_indices.size == 15
    assert np.intersect1d(model.train_indices, model.validation_indices).size == 0


def test_a_scanvi_from_a_registry_has_the_classifier_of_the_adata_model():
    adata = cellvi.data.synthetic_iid(n_batches=2, seed=0)
    SCANVI.setup_anndata(adata, "labels", "label_0", batch_key="batch")
    manager = SCANVI._get_most_recent_anndata_manager(adata)
    reference = SCANVI(adata, n_latent=4)
    from_registry = SCANVI(registry=reference.registry, n_latent=4)
    assert from_registry.n_labels == reference.n_labels == 2
    assert from_registry.labels_ is None and from_registry._labeled_indices.size == 0
    assert list(from_registry._label_mapping) == list(reference._label_mapping)
    shapes = {name: tensor.shape for name, tensor in reference.module.state_dict().items()}
    assert {n: t.shape for n, t in from_registry.module.state_dict().items()} == shapes
    assert "registry" not in from_registry.init_params_["non_kwargs"]
    with pytest.raises(AttributeError, match="datamodule"):
        from_registry.train(max_epochs=1, **TRAIN_KW)
    from_registry.train(max_epochs=1, datamodule=SemiSupervisedDataSplitter(manager), **TRAIN_KW)
    assert "train_classification_loss" in from_registry.history_
    # Without an AnnData of its own, it answers on minibatches of the registered data.
    predicted = from_registry.predict(dataloader=AnnDataLoader(manager, batch_size=100))
    assert len(predicted) == adata.n_obs and set(predicted) <= {"label_1", "label_2"}
    with pytest.raises(ValueError, match="needs adata, or the registry of a SCANVI setup"):
        SCANVI()
    scvi_adata, _ = _setup()
    with pytest.raises(ValueError, match="registry must come from SCANVI.setup_anndata"):
        SCANVI(registry=SCVI(scvi_adata).registry)


def test_from_scvi_model_without_adata_takes_a_scanvi_registry():
    adata, _ = _setup(n_batches=2)
    scvi_model = SCVI(registry=SCVI(adata).registry, n_latent=4)
    labeled = cellvi.data.synthetic_iid(n_batches=2, seed=0)
    SCANVI.setup_anndata(labeled, "labels", "label_0", batch_key="batch")
    registry = SCANVI._get_most_recent_anndata_manager(labeled).registry
    with pytest.warns(UserWarning, match="hasn't been trained"):
        with pytest.raises(ValueError, match="has no AnnData: pass adata, or the registry"):
            SCANVI.from_scvi_model(scvi_model, "label_0")
    with pytest.warns(UserWarning, match="hasn't been trained"):
        scanvi = SCANVI.from_scvi_model(scvi_model, "label_0", registry=registry)
    assert scanvi.was_pretrained and scanvi.n_labels == 2
    weight = "z_encoder.encoder.linears.0.weight"
    assert torch.equal(scanvi.module.state_dict()[weight], scvi_model.module.state_dict()[weight])
