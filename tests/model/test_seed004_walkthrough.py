"""Seed 004, "Constructing a high-level model", run with ``import cellvi as scvi``.

The tutorial's two ``SCVI`` classes are defined below exactly as in its text (first without,
then with ``VAEMixin``); only the imports change, since ``scvi`` is an alias of ``cellvi``
here. Each test walks one stretch of the tutorial in order, checking what the tutorial prints.
Training runs for a couple of epochs instead of 10-20, on CPU, without a progress bar.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData

import cellvi as scvi

from ._model_helpers import BATCHES, TRAIN_KW

# The tutorial's imports, spelt for ``import cellvi as scvi``.
REGISTRY_KEYS = scvi.REGISTRY_KEYS
AnnDataManager = scvi.data.AnnDataManager
CategoricalJointObsField = scvi.data.fields.CategoricalJointObsField
CategoricalObsField = scvi.data.fields.CategoricalObsField
LayerField = scvi.data.fields.LayerField
NumericalJointObsField = scvi.data.fields.NumericalJointObsField
NumericalObsField = scvi.data.fields.NumericalObsField
BaseModelClass = scvi.model.base.BaseModelClass
UnsupervisedTrainingMixin = scvi.model.base.UnsupervisedTrainingMixin
VAEMixin = scvi.model.base.VAEMixin
VAE = scvi.module.VAE


# ---- "Baseline version of SCVI class" (verbatim) ------------------------------------------
class SCVI(UnsupervisedTrainingMixin, BaseModelClass):
    """single-cell Variational Inference [Lopez18]_."""

    def __init__(
        self,
        adata: AnnData,
        n_latent: int = 10,
        **model_kwargs,
    ):
        super().__init__(adata)

        self.module = VAE(
            n_input=self.summary_stats["n_vars"],
            n_batch=self.summary_stats["n_batch"],
            n_latent=n_latent,
            **model_kwargs,
        )
        self._model_summary_string = (
            f"SCVI Model with the following params: \nn_latent: {n_latent}"
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        batch_key: str | None = None,
        layer: str | None = None,
        **kwargs,
    ) -> AnnData | None:
        setup_method_args = cls._get_setup_method_args(**locals())
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            # Dummy fields required for VAE class.
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, None),
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, None, required=False),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, None),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, None),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)


BaselineSCVI = SCVI


# ---- "Mixing in pre-coded features" (verbatim) --------------------------------------------
class SCVI(VAEMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """single-cell Variational Inference [Lopez18]_."""

    def __init__(
        self,
        adata: AnnData,
        n_latent: int = 10,
        **model_kwargs,
    ):
        super().__init__(adata)

        self.module = VAE(
            n_input=self.summary_stats["n_vars"],
            n_batch=self.summary_stats["n_batch"],
            n_latent=n_latent,
            **model_kwargs,
        )
        self._model_summary_string = (
            f"SCVI Model with the following params: \nn_latent: {n_latent}"
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        batch_key: str | None = None,
        layer: str | None = None,
        **kwargs,
    ) -> AnnData | None:
        setup_method_args = cls._get_setup_method_args(**locals())
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            # Dummy fields required for VAE class.
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, None),
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, None, required=False),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, None),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, None),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)


MixinSCVI = SCVI


def _setup(cls=BaselineSCVI):
    scvi.settings.seed = 0
    adata = scvi.data.synthetic_iid()
    cls.setup_anndata(adata, batch_key="batch")
    return adata, cls(adata)


def test_synthetic_data_as_printed():
    adata = scvi.data.synthetic_iid()
    assert adata.shape == (400, 100)
    assert list(adata.obs.columns) == ["batch", "labels"]
    assert list(adata.uns.keys()) == ["protein_names"]
    assert sorted(adata.obsm.keys()) == ["accessibility", "protein_expression"]


def test_setup_stores_manager_and_model_uses_it():
    SCVI = BaselineSCVI
    adata = scvi.data.synthetic_iid()
    SCVI.setup_anndata(adata, batch_key="batch")
    uuid = adata.uns["_scvi_uuid"]
    manager = SCVI._setup_adata_manager_store[uuid]
    assert isinstance(manager, AnnDataManager)
    assert manager.adata is adata
    model = SCVI(adata)
    assert model.adata_manager is manager
    assert repr(model) == (
        "SCVI Model with the following params: \nn_latent: 10\nTraining status: Not Trained"
    )
    assert model.module.n_batch == 2
    assert model.init_params_ == {"kwargs": {"model_kwargs": {}}, "non_kwargs": {"n_latent": 10}}
    # The class store is the tutorial class's own, not the built-in SCVI's.
    assert uuid not in scvi.model.SCVI._setup_adata_manager_store


def test_per_instance_store_and_validate_new_anndata(caplog):
    SCVI = BaselineSCVI
    adata, model = _setup()
    assert isinstance(model.id, str) and model.id
    adata_uuid = adata.uns["_scvi_uuid"]
    assert SCVI._per_instance_manager_store[model.id][adata_uuid] is model.adata_manager

    adata2 = scvi.data.synthetic_iid()
    with caplog.at_level(logging.INFO, logger="cellvi"):
        returned = model._validate_anndata(adata2)
    assert returned is adata2
    assert "transfer" in caplog.text
    assert list(adata2.obs.columns) == ["batch", "labels", "_scvi_batch", "_scvi_labels"]
    assert set(adata2.uns.keys()) == {"protein_names", "_scvi_uuid", "_scvi_manager_uuid"}
    np.testing.assert_array_equal(adata2.obs["_scvi_batch"].to_numpy(), BATCHES)

    store = SCVI._per_instance_manager_store[model.id]
    assert adata2.uns["_scvi_uuid"] != adata_uuid
    assert set(store) == {adata_uuid, adata2.uns["_scvi_uuid"]}
    second = store[adata2.uns["_scvi_uuid"]]
    assert second is not model.adata_manager and second.adata is adata2
    assert adata2.uns["_scvi_manager_uuid"] == second.id
    # Validating again reuses the stored manager instead of making a third.
    model._validate_anndata(adata2)
    assert len(SCVI._per_instance_manager_store[model.id]) == 2


def test_interleaved_models_replay_registration():
    SCVI = BaselineSCVI
    adata, model = _setup()
    np.testing.assert_array_equal(adata.obs["_scvi_batch"].to_numpy(), BATCHES)

    SCVI.setup_anndata(adata, batch_key=None)  # No batch correction.
    model2 = SCVI(adata)
    assert adata.uns["_scvi_manager_uuid"] == model2.adata_manager.id
    assert model2.adata_manager.id != model.adata_manager.id
    encoded = adata.obs["_scvi_batch"]
    assert encoded.dtype == np.int8
    assert len(encoded) == 400 and (encoded == 0).all()
    assert model2.module.n_batch == 1 and model.module.n_batch == 2

    model._validate_anndata(adata)  # Replays registration on adata
    assert adata.uns["_scvi_manager_uuid"] == model.adata_manager.id
    encoded = adata.obs["_scvi_batch"]
    assert encoded.dtype == np.int8
    np.testing.assert_array_equal(encoded.to_numpy(), BATCHES)

    model2._validate_anndata(adata)  # and back again
    assert adata.uns["_scvi_manager_uuid"] == model2.adata_manager.id
    assert (adata.obs["_scvi_batch"] == 0).all()


def test_train_external_indices_save_load_and_missing_query(tmp_path):
    SCVI = BaselineSCVI
    adata, model = _setup()
    model.train(max_epochs=2, **TRAIN_KW)
    assert model.is_trained_
    assert repr(model).endswith("Training status: Trained")
    assert len(model.history_["elbo_train"]) == 2

    # "Using External Indices": the tutorial's example arrays. They leave out most cells,
    # which scvi-tools 1.4.2 refuses (it raises a Warning), and so does cellvi.
    train_ind = np.array([1, 2, 3])
    valid_ind = np.array([4, 5, 6])
    test_ind = np.array(None)
    # The tutorial's snippet omits the manager, which cellvi's DataSplitter takes first.
    with pytest.raises(Warning, match="There are missing indices"):
        scvi.dataloaders.DataSplitter(
            model.adata_manager, external_indexing=[train_ind, valid_ind, test_ind]
        )
    # With every other cell in the validation split, the snippet runs.
    valid_ind = np.setdiff1d(np.arange(400), train_ind)
    data_splitter = scvi.dataloaders.DataSplitter(
        model.adata_manager, external_indexing=[train_ind, valid_ind, test_ind]
    )
    np.testing.assert_array_equal(data_splitter.train_idx, train_ind)
    np.testing.assert_array_equal(data_splitter.val_idx, valid_ind)
    assert data_splitter.test_idx.size == 0
    # Train with that splitter as the tutorial's pseudocode of ``train`` does.
    training_plan = scvi.train.TrainingPlan(model.module)
    runner = scvi.train.TrainRunner(
        model, training_plan=training_plan, data_splitter=data_splitter, max_epochs=1, **TRAIN_KW
    )
    runner()
    np.testing.assert_array_equal(model.train_indices, train_ind)
    np.testing.assert_array_equal(model.validation_indices, valid_ind)

    # Or insert indices directly in train with datasplitter_kwargs.
    train_ind = np.arange(0, 300)
    valid_ind = np.arange(300, 350)
    test_ind = np.arange(350, 400)
    model.train(
        max_epochs=1,
        datasplitter_kwargs={"external_indexing": [train_ind, valid_ind, test_ind]},
        **TRAIN_KW,
    )
    np.testing.assert_array_equal(model.train_indices, train_ind)
    np.testing.assert_array_equal(model.validation_indices, valid_ind)
    np.testing.assert_array_equal(model.test_indices, test_ind)

    # "Save and load".
    save_dir = tempfile.TemporaryDirectory(dir=tmp_path)
    model_dir = os.path.join(save_dir.name, "saved_model")
    model.save(model_dir, save_anndata=True)
    weights = {k: v.clone() for k, v in model.module.state_dict().items()}
    model = SCVI.load(model_dir)
    assert isinstance(model, BaselineSCVI) and model.is_trained_
    assert model.init_params_ == {"kwargs": {"model_kwargs": {}}, "non_kwargs": {"n_latent": 10}}
    for name, tensor in model.module.state_dict().items():
        torch.testing.assert_close(tensor, weights[name], rtol=0, atol=0)
    np.testing.assert_array_equal(model.train_indices, train_ind)
    np.testing.assert_array_equal(model.adata.obs["_scvi_batch"].to_numpy(), BATCHES)

    # "Mixing in pre-coded features": the baseline class has no latent query.
    with pytest.raises(AttributeError):
        model.get_latent_representation()
    try:
        model.get_latent_representation()
    except AttributeError:
        print("This function does not exist")
    save_dir.cleanup()


def test_vaemixin_class_gives_latent_representation(tmp_path):
    adata, model = _setup(MixinSCVI)
    model.train(2, **TRAIN_KW)
    latent = model.get_latent_representation()
    assert latent.shape == (400, 10)
    assert latent.dtype == np.float32 and np.isfinite(latent).all()
    assert latent.std(axis=0).min() > 0  # a representation per cell, not a constant
    assert np.isfinite(model.get_elbo())
    assert np.isfinite(model.get_reconstruction_error()["reconstruction_loss"])
    assert np.isfinite(model.get_marginal_ll(indices=np.arange(20), n_mc_samples=5))

    # The mixin class saves and loads too, latents unchanged.
    model.save(tmp_path / "mixin", save_anndata=True)
    loaded = MixinSCVI.load(tmp_path / "mixin")
    np.testing.assert_array_equal(loaded.get_latent_representation(), latent)


def test_tutorial_query_method_written_by_hand():
    """The tutorial's own ``get_latent_representation`` gives the mixin's posterior means."""

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        if self.is_trained_ is False:
            raise RuntimeError("Please train the model first.")

        adata = self._validate_anndata(adata)
        dataloader = self._make_dataloader(adata=adata, indices=indices, batch_size=batch_size)
        latent = []
        for tensors in dataloader:
            inference_inputs = self.module._get_inference_input(tensors)
            outputs = self.module.inference(**inference_inputs)
            # The tutorial reads ``qz_m`` (scvi-tools < 1.0); cellvi returns ``qz``.
            qz_m = outputs["qz"].loc
            latent += [qz_m.cpu()]
        return torch.cat(latent).numpy()

    adata, model = _setup(MixinSCVI)
    with pytest.raises(RuntimeError, match="train"):
        get_latent_representation(model)
    model.train(1, **TRAIN_KW)
    by_hand = get_latent_representation(model, indices=np.arange(50, 150), batch_size=33)
    np.testing.assert_allclose(
        by_hand, model.get_latent_representation(indices=np.arange(50, 150)), rtol=1e-5, atol=1e-6
    )


def test_builtin_scvi_same_flow(tmp_path, caplog):
    SCVI = scvi.model.SCVI
    scvi.settings.seed = 0
    adata = scvi.data.synthetic_iid()
    SCVI.setup_anndata(adata, batch_key="batch")
    assert SCVI._setup_adata_manager_store[adata.uns["_scvi_uuid"]].adata is adata
    model = SCVI(adata)
    assert "Training status: Not Trained" in repr(model)
    instance_store = SCVI._per_instance_manager_store[model.id]
    assert instance_store[adata.uns["_scvi_uuid"]] is model.adata_manager

    adata2 = scvi.data.synthetic_iid()
    with caplog.at_level(logging.INFO, logger="cellvi"):
        model._validate_anndata(adata2)
    assert {"_scvi_batch", "_scvi_labels"} <= set(adata2.obs.columns)
    assert {"_scvi_uuid", "_scvi_manager_uuid"} <= set(adata2.uns.keys())
    assert len(SCVI._per_instance_manager_store[model.id]) == 2

    SCVI.setup_anndata(adata, batch_key=None)
    model2 = SCVI(adata)
    assert adata.uns["_scvi_manager_uuid"] == model2.adata_manager.id
    assert adata.obs["_scvi_batch"].dtype == np.int8 and (adata.obs["_scvi_batch"] == 0).all()
    model._validate_anndata(adata)
    assert adata.uns["_scvi_manager_uuid"] == model.adata_manager.id
    np.testing.assert_array_equal(adata.obs["_scvi_batch"].to_numpy(), BATCHES)

    model.train(max_epochs=2, **TRAIN_KW)
    # Every cell must be in some split (as in scvi-tools 1.4.2): the rest go to validation.
    model.train(
        max_epochs=1,
        datasplitter_kwargs={
            "external_indexing": [np.array([1, 2, 3]), np.arange(4, 400), np.array([0])]
        },
        **TRAIN_KW,
    )
    np.testing.assert_array_equal(model.train_indices, [1, 2, 3])
    np.testing.assert_array_equal(model.validation_indices, np.arange(4, 400))
    np.testing.assert_array_equal(model.test_indices, [0])
    model_dir = os.path.join(tmp_path, "saved_model")
    model.save(model_dir, save_anndata=True)
    latent = model.get_latent_representation()
    model = SCVI.load(model_dir)
    assert latent.shape == (400, 10)
    np.testing.assert_array_equal(model.get_latent_representation(), latent)
    pd.testing.assert_frame_equal(
        model.adata.obs[["batch", "labels"]], adata.obs[["batch", "labels"]]
    )
