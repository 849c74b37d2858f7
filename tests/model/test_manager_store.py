"""ManagerStoreMixin: the class store, the per-instance store, and the seed-004 interleaving."""

from __future__ import annotations

import gc
import logging
import weakref
from uuid import uuid4

import numpy as np
import pandas as pd
import pytest

from cellvi.data import REGISTRY_KEYS, AnnDataManager
from cellvi.data._constants import MANAGER_UUID_KEY, SETUP_UUID_KEY
from cellvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
    NumericalObsField,
)
from cellvi.model.base._manager_store import ManagerStoreMixin


class TinyModel(ManagerStoreMixin):
    """The smallest model that uses the stores the way seed 004's SCVI does."""

    @classmethod
    def setup_anndata(cls, adata, batch_key=None, layer=None, labels_key=None, **kwargs):
        setup_method_args = {
            "model_name": cls.__name__,
            "setup_args": {"batch_key": batch_key, "layer": layer, "labels_key": labels_key},
        }
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, None, required=False),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, None),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, None),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    def __init__(self, adata):
        self.id = str(uuid4())
        self.adata = adata
        self.adata_manager = type(self)._get_most_recent_anndata_manager(adata, required=True)
        self._register_manager_for_instance(self.adata_manager)
        self.summary_stats = self.adata_manager.summary_stats


class OtherModel(TinyModel):
    pass


@pytest.fixture(autouse=True)
def _empty_stores():
    """Each test starts with empty stores (they are class attributes)."""
    for cls in (TinyModel, OtherModel):
        cls._setup_adata_manager_store.clear()
        cls._per_instance_manager_store.clear()
    yield


# Class store --------------------------------------------------------------------------------


def test_class_store_keyed_by_adata_uuid(adata):
    TinyModel.setup_anndata(adata, batch_key="batch")
    uuid = adata.uns[SETUP_UUID_KEY]
    manager = TinyModel._setup_adata_manager_store[uuid]
    assert list(TinyModel._setup_adata_manager_store) == [uuid]
    assert manager.adata is adata
    assert TinyModel._get_most_recent_anndata_manager(adata) is manager
    assert manager.registry["model_name"] == "TinyModel"


def test_class_store_forgets_anndata_the_user_dropped(make_adata):
    first = make_adata()
    TinyModel.setup_anndata(first, batch_key="batch")
    first_uuid = first.uns[SETUP_UUID_KEY]
    manager = weakref.ref(TinyModel._setup_adata_manager_store[first_uuid])
    del first
    gc.collect()
    second = make_adata()
    TinyModel.setup_anndata(second, batch_key="batch")
    assert list(TinyModel._setup_adata_manager_store) == [second.uns[SETUP_UUID_KEY]]
    assert manager() is None


def test_resetup_replaces_class_store_entry(adata):
    TinyModel.setup_anndata(adata, batch_key="batch")
    first = TinyModel._get_most_recent_anndata_manager(adata)
    TinyModel.setup_anndata(adata, batch_key=None)
    second = TinyModel._get_most_recent_anndata_manager(adata)
    assert second is not first
    assert list(TinyModel._setup_adata_manager_store.values()) == [second]
    assert second.summary_stats.n_batch == 1


def test_each_subclass_has_its_own_stores(adata):
    assert TinyModel._setup_adata_manager_store is not OtherModel._setup_adata_manager_store
    assert TinyModel._per_instance_manager_store is not OtherModel._per_instance_manager_store
    assert TinyModel._setup_adata_manager_store is not ManagerStoreMixin._setup_adata_manager_store
    TinyModel.setup_anndata(adata, batch_key="batch")
    assert OtherModel._get_most_recent_anndata_manager(adata) is None
    assert OtherModel._setup_adata_manager_store == {}
    with pytest.raises(ValueError, match=r"not set up for OtherModel.*OtherModel.setup_anndata"):
        OtherModel(adata)
    OtherModel.setup_anndata(adata)
    other = OtherModel(adata)
    assert list(OtherModel._per_instance_manager_store) == [other.id]
    assert TinyModel._per_instance_manager_store == {}
    # Both classes know the AnnData under the same UUID, with their own managers.
    uuid = adata.uns[SETUP_UUID_KEY]
    tiny_manager = TinyModel._setup_adata_manager_store[uuid]
    assert tiny_manager is not OtherModel._setup_adata_manager_store[uuid]


def test_model_on_data_not_set_up(adata):
    with pytest.raises(ValueError, match=r"not set up for TinyModel\. Call TinyModel\.setup_"):
        TinyModel(adata)


def test_register_manager_needs_registered_fields():
    with pytest.raises(ValueError, match=r"register_fields"):
        TinyModel.register_manager(AnnDataManager(fields=[]))


def test_copy_is_new_data_for_the_class_store(adata):
    TinyModel.setup_anndata(adata, batch_key="batch")
    copied = adata.copy()
    assert TinyModel._get_most_recent_anndata_manager(copied) is None
    with pytest.raises(ValueError, match=r"not set up for TinyModel"):
        TinyModel(copied)
    TinyModel.setup_anndata(copied)
    assert copied.uns[SETUP_UUID_KEY] != adata.uns[SETUP_UUID_KEY]
    assert TinyModel._get_most_recent_anndata_manager(copied).adata is copied
    assert TinyModel._get_most_recent_anndata_manager(adata).adata is adata
    assert len(TinyModel._setup_adata_manager_store) == 2


# Per-instance store -------------------------------------------------------------------------


def test_per_instance_store(adata):
    TinyModel.setup_anndata(adata, batch_key="batch")
    model = TinyModel(adata)
    uuid = adata.uns[SETUP_UUID_KEY]
    assert TinyModel._per_instance_manager_store == {model.id: {uuid: model.adata_manager}}
    assert model.adata_manager is TinyModel._setup_adata_manager_store[uuid]
    assert model.get_anndata_manager(adata) is model.adata_manager
    assert model.summary_stats.n_batch == 2


def test_two_models_have_separate_entries(adata):
    TinyModel.setup_anndata(adata, batch_key="batch")
    model1 = TinyModel(adata)
    model2 = TinyModel(adata)
    assert model1.id != model2.id
    assert set(TinyModel._per_instance_manager_store) == {model1.id, model2.id}


def test_manager_for_new_data_transfers(adata, make_adata):
    TinyModel.setup_anndata(adata, batch_key="batch")
    model = TinyModel(adata)
    assert model._manager_for(adata) is model.adata_manager
    adata2 = make_adata(seed=11, batches=["b"])
    assert model.get_anndata_manager(adata2) is None
    with pytest.raises(ValueError, match=r"no registration of this AnnData"):
        model.get_anndata_manager(adata2, required=True)
    manager2 = model._manager_for(adata2)
    assert manager2.adata is adata2 and manager2 is not model.adata_manager
    assert (adata2.obs["_scvi_batch"] == 1).all()
    store = TinyModel._per_instance_manager_store[model.id]
    assert store == {
        adata.uns[SETUP_UUID_KEY]: model.adata_manager,
        adata2.uns[SETUP_UUID_KEY]: manager2,
    }
    assert model._manager_for(adata2) is manager2  # remembered, not transferred again
    # Transferred data are not set up for the class.
    assert TinyModel._get_most_recent_anndata_manager(adata2) is None


def test_manager_for_passes_extend_categories(adata, make_adata):
    TinyModel.setup_anndata(adata, batch_key="batch")
    model = TinyModel(adata)
    adata2 = make_adata(seed=11, batches=["a", "new"])
    with pytest.raises(ValueError, match=r"\['new'\].*extend_categories"):
        model._manager_for(adata2)
    assert model.get_anndata_manager(adata2) is None
    manager2 = model._manager_for(adata2, extend_categories=True)
    assert manager2.summary_stats.n_batch == 3
    assert model.adata_manager.summary_stats.n_batch == 2


def test_copy_is_new_data_for_the_instance_store(adata):
    TinyModel.setup_anndata(adata, batch_key="batch")
    model = TinyModel(adata)
    copied = adata.copy()
    assert model.get_anndata_manager(copied) is None
    manager = model._manager_for(copied)
    assert manager is not model.adata_manager and manager.adata is copied
    assert copied.uns[SETUP_UUID_KEY] != adata.uns[SETUP_UUID_KEY]
    assert len(TinyModel._per_instance_manager_store[model.id]) == 2
    assert model._manager_for(adata) is model.adata_manager
    assert model._manager_for(copied) is manager


def test_copy_of_transferred_data_is_new_data(adata, make_adata):
    TinyModel.setup_anndata(adata, batch_key="batch")
    model = TinyModel(adata)
    adata2 = make_adata(seed=11)
    manager2 = model._manager_for(adata2)
    copied = adata2.copy()
    manager3 = model._manager_for(copied)
    assert manager3.adata is copied
    assert copied.uns[SETUP_UUID_KEY] != adata2.uns[SETUP_UUID_KEY]
    assert model._manager_for(adata2) is manager2
    assert model._manager_for(copied) is manager3
    assert len(TinyModel._per_instance_manager_store[model.id]) == 3


def test_transfer_onto_data_set_up_for_the_class(adata, make_adata):
    """A model reading another set-up AnnData must not hide that setup from the class."""
    TinyModel.setup_anndata(adata, batch_key="batch")
    model1 = TinyModel(adata)
    adata2 = make_adata(seed=11)
    TinyModel.setup_anndata(adata2, batch_key=None)
    model1._manager_for(adata2)
    assert (adata2.obs["_scvi_batch"] == adata2.obs["batch"].cat.codes).all()
    model2 = TinyModel(adata2)
    assert model2.adata_manager.summary_stats.n_batch == 1
    model2._manager_for(adata2)  # replays model2's own setup
    assert (adata2.obs["_scvi_batch"] == 0).all()


def test_instance_entry_dropped_with_model(adata):
    TinyModel.setup_anndata(adata, batch_key="batch")
    model = TinyModel(adata)
    keep = TinyModel(adata)
    model_id = model.id
    ref = weakref.ref(model)
    assert model_id in TinyModel._per_instance_manager_store
    del model
    gc.collect()
    assert ref() is None
    assert model_id not in TinyModel._per_instance_manager_store
    assert keep.id in TinyModel._per_instance_manager_store


def test_deregister_manager(adata, make_adata):
    TinyModel.setup_anndata(adata, batch_key="batch")
    model = TinyModel(adata)
    adata2, adata3 = make_adata(seed=1), make_adata(seed=2)
    model._manager_for(adata2)
    model._manager_for(adata3)
    model.deregister_manager(adata2)
    assert model.get_anndata_manager(adata2) is None
    assert model.get_anndata_manager(adata3) is not None
    other = make_adata(seed=3)
    TinyModel.setup_anndata(other)
    model.deregister_manager()
    training = {adata.uns[SETUP_UUID_KEY]: model.adata_manager}
    # Every registration but the training data's goes, from both stores.
    assert TinyModel._per_instance_manager_store[model.id] == training
    assert TinyModel._setup_adata_manager_store == training
    with pytest.raises(ValueError, match="nothing to deregister"):
        model.deregister_manager(other)
    model.deregister_manager(adata)  # the training data too, when named
    assert TinyModel._setup_adata_manager_store == {}
    assert TinyModel._per_instance_manager_store[model.id] == {}


# Seed-004 interleaving ----------------------------------------------------------------------


def test_seed_004_interleaving(adata):
    TinyModel.setup_anndata(adata, batch_key="batch")
    uuid = adata.uns[SETUP_UUID_KEY]
    model1 = TinyModel(adata)
    original_codes = adata.obs["_scvi_batch"].copy()
    assert set(original_codes) == {0, 1}
    assert adata.uns[MANAGER_UUID_KEY] == model1.adata_manager.id

    TinyModel.setup_anndata(adata, batch_key=None)  # no batch correction
    model2 = TinyModel(adata)
    assert adata.uns[SETUP_UUID_KEY] == uuid
    assert model2.adata_manager is not model1.adata_manager
    assert adata.uns[MANAGER_UUID_KEY] == model2.adata_manager.id
    assert adata.obs["_scvi_batch"].dtype == np.int8
    assert (adata.obs["_scvi_batch"] == 0).all()
    assert model1.summary_stats.n_batch == 2 and model2.summary_stats.n_batch == 1

    # model1 reads the AnnData: its registration is replayed.
    assert model1._manager_for(adata) is model1.adata_manager
    assert adata.uns[MANAGER_UUID_KEY] == model1.adata_manager.id
    pd.testing.assert_series_equal(adata.obs["_scvi_batch"], original_codes)
    np.testing.assert_array_equal(
        model1.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)[:, 0],
        adata.obs["batch"].cat.codes.to_numpy(),
    )

    # And back for model2.
    assert model2._manager_for(adata) is model2.adata_manager
    assert adata.uns[MANAGER_UUID_KEY] == model2.adata_manager.id
    assert (adata.obs["_scvi_batch"] == 0).all()

    # Nothing was transferred: each model still has a single entry for this AnnData.
    for model in (model1, model2):
        assert TinyModel._per_instance_manager_store[model.id] == {uuid: model.adata_manager}
    assert adata.uns[SETUP_UUID_KEY] == uuid


def test_interleaving_with_labels(adata):
    TinyModel.setup_anndata(adata, batch_key="batch", labels_key="labels")
    model1 = TinyModel(adata)
    labels = adata.obs["_scvi_labels"].copy()
    TinyModel.setup_anndata(adata, batch_key="batch")
    model2 = TinyModel(adata)
    assert (adata.obs["_scvi_labels"] == 0).all()
    model1._manager_for(adata)
    pd.testing.assert_series_equal(adata.obs["_scvi_labels"], labels)
    model2._manager_for(adata)
    assert (adata.obs["_scvi_labels"] == 0).all()


def test_copy_of_set_up_data_read_before_the_original(adata, make_adata):
    """A copy read first must not take over the UUID its original is set up under."""
    TinyModel.setup_anndata(adata, batch_key="batch")
    model = TinyModel(adata)
    adata2 = make_adata(seed=11)
    TinyModel.setup_anndata(adata2, batch_key=None)
    uuid2 = adata2.uns[SETUP_UUID_KEY]
    copied = adata2.copy()
    manager_copy = model._manager_for(copied)
    assert copied.uns[SETUP_UUID_KEY] != uuid2
    manager2 = model._manager_for(adata2)
    assert adata2.uns[SETUP_UUID_KEY] == uuid2
    assert TinyModel(adata2).adata_manager is TinyModel._setup_adata_manager_store[uuid2]
    assert model._manager_for(copied) is manager_copy
    assert model._manager_for(adata2) is manager2


def test_transfer_and_replay_are_logged(adata, make_adata, caplog):
    TinyModel.setup_anndata(adata, batch_key="batch")
    model1 = TinyModel(adata)
    TinyModel.setup_anndata(adata)
    with caplog.at_level(logging.INFO, logger="cellvi"):
        model1._manager_for(make_adata(seed=2))
        assert "transferring the training setup" in caplog.text
        assert "Replaying" not in caplog.text
        model1._manager_for(adata)
        manager_id = model1.adata_manager.id
        replayed = f"Replaying the registration of this AnnData for manager {manager_id}"
        assert replayed in caplog.text


def test_get_from_registry_reads_with_the_models_registration(adata, make_adata):
    TinyModel.setup_anndata(adata, batch_key="batch")
    model = TinyModel(adata)
    codes = model.get_from_registry(adata, REGISTRY_KEYS.BATCH_KEY)
    np.testing.assert_array_equal(codes.ravel(), adata.obs["batch"].cat.codes.to_numpy())
    TinyModel.setup_anndata(adata)  # another setup writes one batch over the codes
    assert (adata.obs["_scvi_batch"] == 0).all()
    # The model's own registration is replayed before it reads.
    np.testing.assert_array_equal(model.get_from_registry(adata, "batch").ravel(), codes.ravel())
    with pytest.raises(ValueError, match="no registration of this AnnData"):
        model.get_from_registry(make_adata(seed=5), REGISTRY_KEYS.BATCH_KEY)
