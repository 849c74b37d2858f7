"""AnnDataManager: registration, registry, summary stats, display, UUIDs, transfer."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from cellvi.data import REGISTRY_KEYS, AnnDataManager
from cellvi.data._constants import (
    _DR_ATTR_KEY,
    _DR_ATTR_NAME,
    _FIELD_REGISTRIES_KEY,
    _MANAGER_UUID_KEY,
    _MODEL_NAME_KEY,
    _SCVI_UUID_KEY,
    _SETUP_ARGS_KEY,
    MANAGER_UUID_KEY,
    SETUP_UUID_KEY,
)
from cellvi.data.fields import CategoricalObsField, LayerField, ObsmField

SETUP_ARGS = {"model_name": "TinyModel", "setup_args": {"batch_key": "batch", "layer": None}}


@pytest.fixture
def manager_factory(seed_fields, full_setup_kwargs):
    def factory(adata, **setup_kwargs):
        kwargs = full_setup_kwargs if not setup_kwargs else setup_kwargs
        manager = AnnDataManager(fields=seed_fields(**kwargs), setup_method_args=SETUP_ARGS)
        manager.register_fields(adata)
        return manager

    return factory


# Registration -------------------------------------------------------------------------------


def test_register_fields_writes_codes_and_uuids(any_adata, manager_factory):
    manager = manager_factory(any_adata)
    assert manager.adata is any_adata
    for column in ("_scvi_batch", "_scvi_labels"):
        assert any_adata.obs[column].dtype == np.int8
    assert "_scvi_extra_categorical_covs" in any_adata.obsm
    assert "_scvi_extra_continuous_covs" in any_adata.obsm
    assert any_adata.uns[MANAGER_UUID_KEY] == manager.id
    assert manager.adata_uuid == any_adata.uns[SETUP_UUID_KEY]
    uuid = any_adata.uns[SETUP_UUID_KEY]
    assert isinstance(uuid, str) and len(uuid) == 36


def test_registry_is_json_serialisable(adata, manager_factory):
    manager = manager_factory(adata)
    registry = manager.registry
    assert json.loads(json.dumps(registry)) == registry
    assert registry["model_name"] == "TinyModel"
    assert registry["setup_method_name"] == "setup_anndata"
    assert registry["setup_args"] == SETUP_ARGS["setup_args"]
    assert isinstance(registry["cellvi_version"], str)
    assert set(registry["field_registries"]) == {
        "X",
        "batch",
        "labels",
        "size_factor",
        "extra_categorical_covs",
        "extra_continuous_covs",
        "proteins",
    }
    for entry in registry["field_registries"].values():
        assert set(entry) == {"data_registry", "state_registry", "summary_stats"}


def test_setup_args_are_copied(adata, seed_fields):
    setup_args = {"model_name": "M", "setup_args": {"keys": ["donor"]}}
    manager = AnnDataManager(fields=seed_fields(), setup_method_args=setup_args)
    setup_args["setup_args"]["keys"].append("site")
    assert manager.registry["setup_args"] == {"keys": ["donor"]}


def test_data_registry_lists_only_filled_fields(adata, manager_factory):
    manager = manager_factory(adata, batch_key="batch", layer="counts")
    assert manager.data_registry == {
        "X": {"attr_name": "layers", "attr_key": "counts"},
        "batch": {"attr_name": "obs", "attr_key": "_scvi_batch"},
        "labels": {"attr_name": "obs", "attr_key": "_scvi_labels"},
    }


def test_summary_stats_attribute_access(adata, manager_factory):
    stats = manager_factory(adata).summary_stats
    assert stats.n_batch == stats["n_batch"] == 2
    assert stats.n_labels == 3 and stats.n_vars == 12 and stats.n_cells == 40
    with pytest.raises(AttributeError, match=r"No key 'n_nothing'"):
        _ = stats.n_nothing
    assert copy.deepcopy(stats) == stats


def test_state_registry_and_unknown_key(adata, manager_factory):
    manager = manager_factory(adata)
    state = manager.get_state_registry("batch")
    # Names come as arrays, compared element-wise; the registry itself keeps JSON lists.
    assert isinstance(state.categorical_mapping, np.ndarray)
    np.testing.assert_array_equal(state.categorical_mapping == "b", [False, True])
    assert manager.registry["field_registries"]["batch"]["state_registry"][
        "categorical_mapping"
    ] == ["a", "b"]
    with pytest.raises(TypeError, match="read-only"):
        state["original_key"] = "other"
    with pytest.raises(KeyError, match=r"'nope' is not registered"):
        manager.get_state_registry("nope")
    with pytest.raises(KeyError, match=r"'nope' is not registered"):
        manager.get_from_registry("nope")


def test_get_from_registry_values(adata, manager_factory):
    manager = manager_factory(adata)
    np.testing.assert_array_equal(manager.get_from_registry("X"), adata.X)
    np.testing.assert_array_equal(
        manager.get_from_registry("batch")[:, 0], adata.obs["batch"].cat.codes.to_numpy()
    )
    labels = manager.get_from_registry("labels")[:, 0]
    np.testing.assert_array_equal(
        np.asarray(["B cell", "NK", "T cell"], dtype=object)[labels],
        adata.obs["labels"].to_numpy(),
    )


def test_view_registry_prints_table(adata, manager_factory, capsys):
    manager = manager_factory(adata)
    manager.view_registry()
    out = capsys.readouterr().out
    for text in (
        "TinyModel",
        "Summary statistics",
        "n_batch",
        "n_extra_categorical_covs",
        "Data registry",
        "adata.X",
        "_scvi_batch",
        "_scvi_labels",
        "size_factor",
        "protein_expression",
        "batch state registry",
        "adata.obs['donor']",
        "T cell",
    ):
        assert text in out, text
    manager.view_registry(hide_state_registries=True)
    short = capsys.readouterr().out
    assert "Data registry" in short and "state registry" not in short


def test_repr(adata, manager_factory):
    manager = manager_factory(adata, batch_key="batch")
    text = repr(manager)
    assert manager.id in text and adata.uns[SETUP_UUID_KEY] in text and "n_batch=2" in text
    assert "no AnnData" in repr(AnnDataManager(fields=[]))


def test_setup_uuid_kept_on_resetup(adata, manager_factory):
    first = manager_factory(adata, batch_key="batch")
    uuid = adata.uns[SETUP_UUID_KEY]
    second = manager_factory(adata, batch_key=None)
    assert adata.uns[SETUP_UUID_KEY] == uuid == first.adata_uuid == second.adata_uuid
    assert adata.uns[MANAGER_UUID_KEY] == second.id != first.id
    assert (adata.obs["_scvi_batch"] == 0).all()


def test_duplicated_registry_keys_error():
    with pytest.raises(ValueError, match=r"registry keys \['batch'\]"):
        AnnDataManager(
            fields=[
                CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, "batch"),
                CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, None),
                LayerField(REGISTRY_KEYS.X_KEY, None),
            ]
        )


def test_register_twice_error(adata, make_adata, manager_factory):
    manager = manager_factory(adata)
    with pytest.raises(RuntimeError, match=r"already holds an AnnData.*transfer_fields"):
        manager.register_fields(make_adata(seed=1))
    with pytest.raises(RuntimeError, match=r"already holds an AnnData"):
        manager.register_fields(adata)


def test_unregistered_manager_errors(seed_fields):
    manager = AnnDataManager(fields=seed_fields())
    with pytest.raises(KeyError, match=r"'X' is not registered"):
        manager.get_from_registry("X")
    with pytest.raises(RuntimeError, match=r"No AnnData is registered"):
        _ = manager.adata_uuid
    with pytest.raises(RuntimeError, match=r"No AnnData is registered"):
        manager.transfer_fields(None)
    with pytest.raises(RuntimeError, match=r"No AnnData is registered"):
        manager.validate()


# Transfer -----------------------------------------------------------------------------------


def test_transfer_subset_keeps_training_codes(adata, make_adata, manager_factory):
    manager = manager_factory(adata)
    target = make_adata(seed=7, batches=["b"])
    assert list(target.obs["batch"].cat.categories) == ["b"]
    new = manager.transfer_fields(target)
    assert (target.obs["_scvi_batch"] == 1).all()
    assert new.summary_stats.n_batch == 2
    assert list(new.get_state_registry("batch")["categorical_mapping"]) == ["a", "b"]
    assert new.adata is target and new.id != manager.id
    assert target.uns[MANAGER_UUID_KEY] == new.id
    assert adata.uns[MANAGER_UUID_KEY] == manager.id  # source untouched
    assert new.registry["setup_args"] == manager.registry["setup_args"]


def test_transfer_shuffled_category_order_maps_by_name(adata, make_adata, manager_factory):
    manager = manager_factory(adata)
    target = make_adata(seed=7)
    names = target.obs["batch"].astype(str)
    target.obs["batch"] = pd.Categorical(names, categories=["b", "a"])
    target.obs["labels"] = pd.Categorical(
        target.obs["labels"], categories=["T cell", "NK", "B cell"]
    )
    manager.transfer_fields(target)
    np.testing.assert_array_equal(
        target.obs["_scvi_batch"].to_numpy(), (names == "b").astype(int).to_numpy()
    )
    np.testing.assert_array_equal(
        target.obs["_scvi_labels"].to_numpy(),
        target.obs["labels"].map({"B cell": 0, "NK": 1, "T cell": 2}).astype(int).to_numpy(),
    )


def test_transfer_unseen_category(adata, make_adata, manager_factory):
    manager = manager_factory(adata)
    target = make_adata(seed=7, batches=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"adata.obs\['batch'\].*\['c'\].*extend_categories=True"):
        manager.transfer_fields(target)
    new = manager.transfer_fields(target, extend_categories=True)
    assert new.summary_stats.n_batch == 3
    assert manager.summary_stats.n_batch == 2
    assert list(new.get_state_registry("batch")["categorical_mapping"]) == ["a", "b", "c"]
    expected = target.obs["batch"].map({"a": 0, "b": 1, "c": 2}).astype(int).to_numpy()
    np.testing.assert_array_equal(target.obs["_scvi_batch"].to_numpy(), expected)


def test_transfer_gene_count_mismatch(adata, make_adata, manager_factory):
    manager = manager_factory(adata)
    with pytest.raises(ValueError, match=r"has 10 genes but the model was set up with 12"):
        manager.transfer_fields(make_adata(seed=7, n_genes=10))


def test_transfer_gene_order_mismatch(adata, make_adata, manager_factory):
    manager = manager_factory(adata)
    target = make_adata(seed=7)
    target = target[:, list(target.var_names[::-1])].copy()
    with pytest.raises(ValueError, match=r"differ from the training genes at 12 positions"):
        manager.transfer_fields(target)
    renamed = make_adata(seed=7)
    renamed.var_names = [f"g{j}" for j in range(12)]
    with pytest.raises(ValueError, match=r"'g0' where 'gene_0' was expected"):
        manager.transfer_fields(renamed)


def test_transfer_to_copy_gets_new_uuid(adata, manager_factory):
    manager = manager_factory(adata)
    copied = adata.copy()
    assert copied.uns[SETUP_UUID_KEY] == adata.uns[SETUP_UUID_KEY]
    new = manager.transfer_fields(copied)
    assert copied.uns[SETUP_UUID_KEY] != adata.uns[SETUP_UUID_KEY]
    assert new.adata_uuid == copied.uns[SETUP_UUID_KEY]
    assert manager.adata_uuid == adata.uns[SETUP_UUID_KEY]


def test_transfer_to_fresh_data_gives_it_a_uuid(adata, make_adata, manager_factory):
    manager = manager_factory(adata)
    target = make_adata(seed=3)
    assert SETUP_UUID_KEY not in target.uns
    new = manager.transfer_fields(target)
    assert target.uns[SETUP_UUID_KEY] not in (None, adata.uns[SETUP_UUID_KEY])
    assert new.adata_uuid == target.uns[SETUP_UUID_KEY]


def test_transfer_to_set_up_data_keeps_its_uuid(adata, make_adata, manager_factory):
    """Transferring onto an AnnData set up on its own must not change its identity."""
    manager = manager_factory(adata)
    target = make_adata(seed=3)
    manager_factory(target)
    uuid = target.uns[SETUP_UUID_KEY]
    manager.transfer_fields(target)
    assert target.uns[SETUP_UUID_KEY] == uuid


# Validate / replay --------------------------------------------------------------------------


def test_validate_replays_overwritten_codes(adata, manager_factory):
    first = manager_factory(adata, batch_key="batch")
    codes = adata.obs["_scvi_batch"].copy()
    second = manager_factory(adata, batch_key=None)
    assert (adata.obs["_scvi_batch"] == 0).all()
    first.validate()
    assert adata.uns[MANAGER_UUID_KEY] == first.id
    pd.testing.assert_series_equal(adata.obs["_scvi_batch"], codes)
    second.validate()
    assert adata.uns[MANAGER_UUID_KEY] == second.id
    assert (adata.obs["_scvi_batch"] == 0).all()


def test_validate_restores_deleted_codes(adata, manager_factory):
    manager = manager_factory(adata)
    codes = adata.obs["_scvi_labels"].copy()
    del adata.obs["_scvi_labels"]
    del adata.obsm["_scvi_extra_continuous_covs"]
    manager.validate()
    pd.testing.assert_series_equal(adata.obs["_scvi_labels"], codes)
    assert "_scvi_extra_continuous_covs" in adata.obsm


def test_validate_replays_extended_categories(adata, make_adata, manager_factory):
    manager = manager_factory(adata)
    target = make_adata(seed=7, batches=["a", "c"])
    new = manager.transfer_fields(target, extend_categories=True)
    codes = target.obs["_scvi_batch"].copy()
    manager_factory(target, batch_key=None)  # another setup writes over the codes
    new.validate()
    pd.testing.assert_series_equal(target.obs["_scvi_batch"], codes)
    assert new.summary_stats.n_batch == 3


def test_validate_checks_fields(adata, manager_factory):
    manager = manager_factory(adata)
    del adata.obs["labels"]
    with pytest.raises(KeyError, match=r"labels_key: 'labels' is not a key of adata.obs"):
        manager.validate()


# scvi-tools' manager API --------------------------------------------------------------------


def test_registry_keys_and_attribute_views(adata, manager_factory):
    manager = manager_factory(adata)
    registry = manager.registry
    assert set(registry) >= {_MODEL_NAME_KEY, _SETUP_ARGS_KEY, _FIELD_REGISTRIES_KEY}
    assert adata.uns[_SCVI_UUID_KEY] == manager.adata_uuid
    assert adata.uns[_MANAGER_UUID_KEY] == manager.id
    location = manager.data_registry.batch
    assert location == {_DR_ATTR_NAME: "obs", _DR_ATTR_KEY: "_scvi_batch"}
    assert location.attr_key == "_scvi_batch"
    with pytest.raises(TypeError, match="read-only"):
        manager.summary_stats["n_batch"] = 5


def test_setup_method_args_are_read_and_updated(adata, manager_factory):
    manager = manager_factory(adata)
    manager.update_setup_method_args({"extra": 1})
    args = manager._get_setup_method_args()
    assert args[_MODEL_NAME_KEY] == "TinyModel"
    assert args[_SETUP_ARGS_KEY] == {"batch_key": "batch", "layer": None, "extra": 1}
    args[_SETUP_ARGS_KEY]["extra"] = 2  # a copy
    assert manager.registry[_SETUP_ARGS_KEY]["extra"] == 1
    assert manager.transfer_fields(adata.copy()).registry[_SETUP_ARGS_KEY]["extra"] == 1


def test_transfer_options_need_a_source_registry(adata, seed_fields):
    with pytest.raises(TypeError, match=r"transfer options \['extend_categories'\]"):
        AnnDataManager(seed_fields()).register_fields(adata, extend_categories=True)
    assert "_scvi_uuid" not in adata.uns


def test_register_new_fields_adds_to_the_registration(adata, seed_fields, make_adata):
    manager = AnnDataManager(seed_fields(batch_key="batch"))
    manager.register_fields(adata)
    proteins = ObsmField(REGISTRY_KEYS.PROTEIN_EXP_KEY, "protein_expression")
    manager.register_new_fields([proteins])
    assert manager.fields[-1] is proteins and manager.summary_stats.n_proteins == 5
    np.testing.assert_array_equal(
        manager.get_from_registry(REGISTRY_KEYS.PROTEIN_EXP_KEY), adata.obsm["protein_expression"]
    )
    target = make_adata(seed=4)
    assert manager.transfer_fields(target).summary_stats.n_proteins == 5  # carried along
    with pytest.raises(ValueError, match=r"registry keys \['proteins'\]"):
        manager.register_new_fields([ObsmField(REGISTRY_KEYS.PROTEIN_EXP_KEY, "other")])


def test_two_fields_giving_one_statistic_are_refused(adata, assert_unchanged):
    before = adata.copy()
    fields = [
        LayerField(REGISTRY_KEYS.X_KEY, None),
        CategoricalObsField("batch", "batch"),
        ObsmField("batch", "protein_expression"),
    ]
    with pytest.raises(ValueError, match="registry keys \\['batch'\\]"):
        AnnDataManager(fields)
    odd = [LayerField(REGISTRY_KEYS.X_KEY, None), LayerField("cells", "counts")]
    odd[1]._count_stat_key = "n_vars"  # a field that repeats another's statistic
    with pytest.raises(ValueError, match="'X' and 'cells' both give the summary statistic"):
        AnnDataManager(odd).register_fields(adata)
    assert_unchanged(before, adata)


def test_fortran_ordered_data_are_stored_c_ordered_once_registered(adata, seed_fields):
    adata.X = np.asfortranarray(adata.X)
    frame = pd.DataFrame(
        np.asfortranarray(adata.obsm["protein_expression"]), index=adata.obs_names
    )
    adata.obsm["protein_expression"] = frame
    values = frame.to_numpy().copy()
    manager = AnnDataManager(seed_fields(protein_key="protein_expression"))
    manager.register_fields(adata)
    assert adata.X.flags.c_contiguous
    registered = manager.get_from_registry(REGISTRY_KEYS.PROTEIN_EXP_KEY)
    assert registered.to_numpy().flags.c_contiguous
    np.testing.assert_array_equal(registered.to_numpy(), values)
    assert list(registered.index) == list(adata.obs_names)

    other = adata.copy()
    other.X = np.asfortranarray(other.X)
    with pytest.raises(KeyError):
        AnnDataManager(seed_fields(batch_key="no_such_column")).register_fields(other)
    assert not other.X.flags.c_contiguous  # a failed registration changes nothing
