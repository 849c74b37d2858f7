"""Each field type on its own: register, transfer, validate, summary stats, data, state view."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from scipy import sparse

from cellvi.data import REGISTRY_KEYS, AnnDataManager
from cellvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
    NumericalObsField,
    ObsmField,
)


def render(table) -> str:
    """A rich table as plain text."""
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(table)
    return console.file.getvalue()


def register(adata, *fields) -> AnnDataManager:
    manager = AnnDataManager(fields=list(fields))
    manager.register_fields(adata)
    return manager


def raw_state(manager: AnnDataManager, key: str) -> dict:
    """A field's state as the registry records it (plain JSON), not the array view."""
    return manager.registry["field_registries"][key]["state_registry"]


def dense(matrix) -> np.ndarray:
    return matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)


# LayerField ---------------------------------------------------------------------------------


class TestLayerField:
    def test_x_registers_counts_and_reports_shape(self, any_adata):
        field = LayerField(REGISTRY_KEYS.X_KEY, None, is_count_data=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # integer counts: no warning
            state = field.register_field(any_adata)
        assert field.attr_name == "X" and field.attr_key is None
        assert field.data_registry == {"attr_name": "X", "attr_key": None}
        assert state["n_cells"] == 40 and state["n_vars"] == 12
        assert state["column_names"] == [f"gene_{j}" for j in range(12)]
        assert state["is_count_data"] is True and state["layer"] is None
        assert field.get_summary_stats(state) == {"n_cells": 40, "n_vars": 12}
        assert field.get_field_data(any_adata) is any_adata.X
        assert field.view_state_registry(state) is None
        json.dumps(state)

    def test_layer_is_read_from_adata_layers(self, any_adata):
        manager = register(any_adata, LayerField(REGISTRY_KEYS.X_KEY, "counts"))
        assert manager.data_registry[REGISTRY_KEYS.X_KEY] == {
            "attr_name": "layers",
            "attr_key": "counts",
        }
        data = manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        assert data is any_adata.layers["counts"]
        assert sparse.issparse(data) == sparse.issparse(any_adata.X)
        assert data.shape == (40, 12)
        np.testing.assert_array_equal(dense(data), dense(any_adata.X))
        assert manager.summary_stats.n_vars == 12
        assert manager.summary_stats.n_cells == 40

    def test_non_count_layer_accepts_negative_values(self, adata):
        assert (adata.layers["normalized"] < 0).any()
        field = LayerField(REGISTRY_KEYS.X_KEY, "normalized", is_count_data=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            state = field.register_field(adata)
        assert state["is_count_data"] is False
        with pytest.raises(ValueError, match=r"negative values"):
            LayerField(REGISTRY_KEYS.X_KEY, "normalized", is_count_data=True).register_field(adata)

    def test_non_count_layer_still_rejects_nan(self, adata):
        adata.layers["normalized"][0, 0] = np.nan
        field = LayerField(REGISTRY_KEYS.X_KEY, "normalized", is_count_data=False)
        with pytest.raises(ValueError, match=r"adata.layers\['normalized'\] holds NaN"):
            field.register_field(adata)

    def test_other_registry_key_reports_its_own_width(self, adata):
        field = LayerField("spliced", "counts")
        state = field.register_field(adata)
        # Only the main matrix counts the cells, so two matrices never give n_cells twice.
        assert field.get_summary_stats(state) == {"n_spliced": 12}

    def test_transfer_checks_genes_then_registers(self, adata, make_adata):
        field = LayerField(REGISTRY_KEYS.X_KEY, None)
        state = field.register_field(adata)
        target = make_adata(seed=3, n_cells=7)
        new_state = field.transfer_field(state, target)
        assert new_state["n_cells"] == 7 and new_state["n_vars"] == 12
        with pytest.raises(ValueError, match=r"has 11 genes but the model was set up with 12"):
            field.transfer_field(state, make_adata(n_genes=11))

    def test_validate_field(self, adata):
        field = LayerField(REGISTRY_KEYS.X_KEY, "counts")
        field.validate_field(adata)
        del adata.layers["counts"]
        with pytest.raises(KeyError, match=r"'counts' is not a key of adata.layers"):
            field.validate_field(adata)


# CategoricalObsField ------------------------------------------------------------------------


class TestCategoricalObsField:
    def test_given_key_writes_int8_codes_in_declared_order(self, adata):
        field = CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, "batch")
        state = field.register_field(adata)
        assert state == {"categorical_mapping": ["a", "b"], "original_key": "batch"}
        codes = adata.obs["_scvi_batch"]
        assert codes.dtype == np.int8
        np.testing.assert_array_equal(codes.to_numpy(), adata.obs["batch"].cat.codes.to_numpy())
        assert set(codes) == {0, 1}
        assert field.get_summary_stats(state) == {"n_batch": 2}
        assert field.attr_name == "obs" and field.attr_key == "_scvi_batch"
        data = field.get_field_data(adata)
        assert data.shape == (40, 1)
        json.dumps(state)

    def test_string_column_gets_sorted_categories(self, adata):
        field = CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, "labels")
        state = field.register_field(adata)
        assert state["categorical_mapping"] == ["B cell", "NK", "T cell"]
        expected = pd.Series(adata.obs["labels"]).map({"B cell": 0, "NK": 1, "T cell": 2})
        np.testing.assert_array_equal(adata.obs["_scvi_labels"].to_numpy(), expected.to_numpy())
        assert field.get_summary_stats(state) == {"n_labels": 3}

    def test_none_key_is_a_single_category(self, adata):
        field = CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, None)
        state = field.register_field(adata)
        assert state == {"categorical_mapping": [0], "original_key": None}
        codes = adata.obs["_scvi_batch"]
        assert codes.dtype == np.int8
        assert (codes == 0).all() and len(codes) == 40
        assert field.get_summary_stats(state) == {"n_batch": 1}
        assert not field.is_empty

    def test_view_state_registry_lists_categories_and_codes(self, adata):
        field = CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, "batch")
        text = render(field.view_state_registry(field.register_field(adata)))
        assert "batch state registry" in text
        assert "adata.obs['batch']" in text
        assert "a" in text and "b" in text and "1" in text
        none_field = CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, None)
        text = render(none_field.view_state_registry(none_field.register_field(adata)))
        assert "not set: one category" in text

    def test_transfer_keeps_training_codes(self, adata, make_adata):
        field = CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, "batch")
        state = field.register_field(adata)
        target = make_adata(seed=5, batches=["b"])
        new_state = field.transfer_field(state, target)
        assert new_state["categorical_mapping"] == ["a", "b"]
        assert (target.obs["_scvi_batch"] == 1).all()

    def test_transfer_unseen_category(self, adata, make_adata):
        field = CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, "batch")
        state = field.register_field(adata)
        target = make_adata(seed=5, batches=["a", "z"])
        with pytest.raises(ValueError, match=r"unseen at setup: \['z'\].*extend_categories"):
            field.transfer_field(state, target)
        new_state = field.transfer_field(state, target, extend_categories=True)
        assert new_state["categorical_mapping"] == ["a", "b", "z"]
        assert field.get_summary_stats(new_state) == {"n_batch": 3}
        is_z = (target.obs["batch"] == "z").to_numpy()
        np.testing.assert_array_equal(target.obs["_scvi_batch"].to_numpy(), np.where(is_z, 2, 0))

    def test_validate_field(self, adata):
        field = CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, "batch")
        field.validate_field(adata)
        del adata.obs["batch"]
        with pytest.raises(KeyError, match=r"batch_key: 'batch' is not a key of adata.obs"):
            field.validate_field(adata)


# NumericalObsField --------------------------------------------------------------------------


class TestNumericalObsField:
    def test_required_field_needs_a_key(self):
        with pytest.raises(ValueError, match=r"'size_factor' is required"):
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, None, required=True)

    def test_registered_column_is_read_as_is(self, adata):
        manager = register(adata, NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, "size_factor"))
        field = manager.fields[0]
        state = manager.get_state_registry(REGISTRY_KEYS.SIZE_FACTOR_KEY)
        assert state == {"original_key": "size_factor"}
        assert field.get_summary_stats(state) == {}
        assert manager.data_registry[REGISTRY_KEYS.SIZE_FACTOR_KEY] == {
            "attr_name": "obs",
            "attr_key": "size_factor",
        }
        values = manager.get_from_registry(REGISTRY_KEYS.SIZE_FACTOR_KEY)
        assert values.shape == (40, 1)
        np.testing.assert_array_equal(values[:, 0], adata.obs["size_factor"].to_numpy())
        assert "_scvi_size_factor" not in adata.obs  # read in place, nothing written
        assert field.view_state_registry(state) is None

    def test_optional_empty_field(self, adata):
        field = NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, None, required=False)
        assert field.is_empty
        manager = register(adata, field)
        assert REGISTRY_KEYS.SIZE_FACTOR_KEY not in manager.data_registry
        assert manager.get_state_registry(REGISTRY_KEYS.SIZE_FACTOR_KEY) == {"original_key": None}
        with pytest.raises(ValueError, match=r"'size_factor' is registered empty"):
            manager.get_from_registry(REGISTRY_KEYS.SIZE_FACTOR_KEY)

    def test_transfer_and_validate(self, adata, make_adata):
        field = NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, "size_factor")
        state = field.register_field(adata)
        target = make_adata(seed=2)
        assert field.transfer_field(state, target) == {"original_key": "size_factor"}
        del target.obs["size_factor"]
        with pytest.raises(KeyError, match=r"size_factor_key: 'size_factor' is not a key"):
            field.transfer_field(state, target)


# Joint obs fields ---------------------------------------------------------------------------


class TestCategoricalJointObsField:
    def test_registers_codes_table(self, adata):
        manager = register(
            adata, CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, ["donor", "site"])
        )
        state = raw_state(manager, REGISTRY_KEYS.CAT_COVS_KEY)
        assert state["mappings"] == {"donor": ["d1", "d2", "d3"], "site": ["s1", "s2"]}
        view = manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY)
        np.testing.assert_array_equal(view.mappings.site == "s2", [False, True])
        assert state["field_keys"] == ["donor", "site"]
        assert state["n_cats_per_key"] == [3, 2]
        assert manager.summary_stats.n_extra_categorical_covs == 2
        table = adata.obsm["_scvi_extra_categorical_covs"]
        assert list(table.columns) == ["donor", "site"]
        assert list(table.index) == list(adata.obs_names)
        data = manager.get_from_registry(REGISTRY_KEYS.CAT_COVS_KEY)
        assert isinstance(data, pd.DataFrame) and data.shape == (40, 2)
        np.testing.assert_array_equal(data["donor"], adata.obs["donor"].cat.codes.to_numpy())
        np.testing.assert_array_equal(data["site"], adata.obs["site"].cat.codes.to_numpy())
        json.dumps(state)

    @pytest.mark.parametrize("keys", [None, []])
    def test_no_keys_is_empty(self, adata, keys):
        field = CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, keys)
        assert field.is_empty
        manager = register(adata, field)
        assert manager.summary_stats.n_extra_categorical_covs == 0
        assert REGISTRY_KEYS.CAT_COVS_KEY not in manager.data_registry
        assert "_scvi_extra_categorical_covs" not in adata.obsm
        assert field.view_state_registry(manager.get_state_registry(field.registry_key)) is None

    def test_repeated_keys_error(self):
        with pytest.raises(ValueError, match=r"repeated: \['donor'\]"):
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, ["donor", "site", "donor"])

    def test_transfer_maps_by_name_and_extends(self, adata, make_adata):
        field = CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, ["donor", "site"])
        state = field.register_field(adata)
        target = make_adata(seed=4)
        # Only d3 and a reversed category order in the new data: codes still by name.
        target.obs["donor"] = pd.Categorical(["d3"] * 40, categories=["d3", "d1", "d2"])
        sites = target.obs["site"].astype(str)
        target.obs["site"] = pd.Categorical(sites, categories=["s2", "s1"])
        new_state = field.transfer_field(state, target)
        assert new_state["mappings"] == state["mappings"]
        table = target.obsm["_scvi_extra_categorical_covs"]
        assert (table["donor"] == 2).all()
        expected_site = (target.obs["site"].astype(str) == "s2").astype(int).to_numpy()
        np.testing.assert_array_equal(table["site"].to_numpy(), expected_site)
        target.obs["donor"] = pd.Categorical(["d9"] * 40)
        with pytest.raises(ValueError, match=r"adata.obs\['donor'\] holds categories unseen"):
            field.transfer_field(state, target)
        extended = field.transfer_field(state, target, extend_categories=True)
        assert extended["mappings"]["donor"] == ["d1", "d2", "d3", "d9"]
        assert extended["n_cats_per_key"] == [4, 2]
        assert (target.obsm["_scvi_extra_categorical_covs"]["donor"] == 3).all()

    def test_view_state_registry(self, adata):
        field = CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, ["donor", "site"])
        text = render(field.view_state_registry(field.register_field(adata)))
        assert "adata.obs['donor']" in text and "adata.obs['site']" in text
        assert "d3" in text and "s2" in text

    def test_validate_field(self, adata):
        field = CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, ["donor", "nope"])
        with pytest.raises(KeyError, match=r"covariate of 'extra_categorical_covs': 'nope'"):
            field.validate_field(adata)


class TestNumericalJointObsField:
    def test_registers_float_table(self, adata):
        manager = register(
            adata, NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, ["age", "pct_mito"])
        )
        assert raw_state(manager, REGISTRY_KEYS.CONT_COVS_KEY) == {"columns": ["age", "pct_mito"]}
        assert manager.summary_stats.n_extra_continuous_covs == 2
        table = adata.obsm["_scvi_extra_continuous_covs"]
        assert list(table.columns) == ["age", "pct_mito"]
        # The table is the obs columns as they are (their dtypes kept), as in scvi-tools.
        data = manager.get_from_registry(REGISTRY_KEYS.CONT_COVS_KEY)
        pd.testing.assert_frame_equal(data, adata.obs[["age", "pct_mito"]])

    @pytest.mark.parametrize("keys", [None, []])
    def test_no_keys_is_empty(self, adata, keys):
        field = NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, keys)
        manager = register(adata, field)
        assert field.is_empty
        assert manager.summary_stats["n_extra_continuous_covs"] == 0
        assert "_scvi_extra_continuous_covs" not in adata.obsm
        assert REGISTRY_KEYS.CONT_COVS_KEY not in manager.data_registry
        assert field.view_state_registry(manager.get_state_registry(field.registry_key)) is None

    def test_transfer_and_view(self, adata, make_adata):
        field = NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, ["age"])
        state = field.register_field(adata)
        target = make_adata(seed=8, n_cells=6)
        assert field.transfer_field(state, target) == {"columns": ["age"]}
        assert target.obsm["_scvi_extra_continuous_covs"].shape == (6, 1)
        assert "adata.obs['age']" in render(field.view_state_registry(state))
        target.obs["age"] = "old"
        with pytest.raises(ValueError, match=r"adata.obs\['age'\] must be numeric"):
            field.validate_field(target)


# ObsmField ----------------------------------------------------------------------------------


class TestObsmField:
    def test_array_with_uns_column_names(self, adata):
        field = ObsmField(
            REGISTRY_KEYS.PROTEIN_EXP_KEY,
            "protein_expression",
            is_count_data=True,
            colnames_uns_key="protein_names",
        )
        manager = register(adata, field)
        state = raw_state(manager, REGISTRY_KEYS.PROTEIN_EXP_KEY)
        assert state == {"column_names": [f"prot_{k}" for k in range(5)]}
        assert manager.summary_stats.n_proteins == 5
        data = manager.get_from_registry(REGISTRY_KEYS.PROTEIN_EXP_KEY)
        assert data.shape == (40, 5)
        np.testing.assert_array_equal(data, adata.obsm["protein_expression"])
        assert field.view_state_registry(state) is None
        json.dumps(state)

    def test_dataframe_columns_are_the_names(self, adata):
        frame = pd.DataFrame(
            adata.obsm["protein_expression"],
            index=adata.obs_names,
            columns=["CD3", "CD4", "CD8", "CD19", "CD56"],
        )
        adata.obsm["protein_expression"] = frame
        field = ObsmField(REGISTRY_KEYS.PROTEIN_EXP_KEY, "protein_expression", is_count_data=True)
        manager = register(adata, field)
        assert raw_state(manager, REGISTRY_KEYS.PROTEIN_EXP_KEY)["column_names"] == [
            "CD3",
            "CD4",
            "CD8",
            "CD19",
            "CD56",
        ]
        data = manager.get_from_registry(REGISTRY_KEYS.PROTEIN_EXP_KEY)
        assert data is adata.obsm["protein_expression"]  # the table, with its column names

    def test_no_names_gives_positions(self, adata):
        field = ObsmField(REGISTRY_KEYS.PROTEIN_EXP_KEY, "protein_expression")
        assert field.register_field(adata) == {"column_names": ["0", "1", "2", "3", "4"]}

    def test_uns_names_of_wrong_length(self, adata):
        adata.uns["protein_names"] = np.array(["p0", "p1"])
        field = ObsmField(
            REGISTRY_KEYS.PROTEIN_EXP_KEY, "protein_expression", colnames_uns_key="protein_names"
        )
        with pytest.raises(ValueError, match=r"names 2 columns but .* has 5"):
            field.register_field(adata)

    def test_count_check(self, adata):
        adata.obsm["protein_expression"][3, 1] = -2
        counts = ObsmField(REGISTRY_KEYS.PROTEIN_EXP_KEY, "protein_expression", is_count_data=True)
        with pytest.raises(ValueError, match=r"adata.obsm\['protein_expression'\] holds negative"):
            counts.register_field(adata)
        plain = ObsmField(REGISTRY_KEYS.PROTEIN_EXP_KEY, "protein_expression", is_count_data=False)
        plain.register_field(adata)  # not counts: negatives are fine

    def test_optional_and_required(self, adata):
        with pytest.raises(ValueError, match=r"'proteins' is required"):
            ObsmField(REGISTRY_KEYS.PROTEIN_EXP_KEY, None)
        field = ObsmField(REGISTRY_KEYS.PROTEIN_EXP_KEY, None, required=False)
        manager = register(adata, field)
        assert field.is_empty
        assert manager.summary_stats.n_proteins == 0
        assert REGISTRY_KEYS.PROTEIN_EXP_KEY not in manager.data_registry

    def test_transfer_requires_same_columns(self, adata, make_adata):
        field = ObsmField(
            REGISTRY_KEYS.PROTEIN_EXP_KEY,
            "protein_expression",
            is_count_data=True,
            colnames_uns_key="protein_names",
        )
        state = field.register_field(adata)
        target = make_adata(seed=9)
        assert field.transfer_field(state, target) == state
        target.uns["protein_names"] = target.uns["protein_names"][::-1].copy()
        with pytest.raises(ValueError, match=r"must match in number and order"):
            field.transfer_field(state, target)
        target.obsm["protein_expression"] = target.obsm["protein_expression"][:, :3]
        target.uns["protein_names"] = np.array(["prot_0", "prot_1", "prot_2"])
        with pytest.raises(ValueError, match=r"must match in number and order"):
            field.transfer_field(state, target)

    def test_validate_field(self, adata):
        field = ObsmField(REGISTRY_KEYS.PROTEIN_EXP_KEY, "protein_expression")
        field.validate_field(adata)
        del adata.obsm["protein_expression"]
        with pytest.raises(KeyError, match=r"'protein_expression' is not a key of adata.obsm"):
            field.validate_field(adata)


# All fields together ------------------------------------------------------------------------


def test_seed_fields_summary_stats(any_adata, seed_fields, full_setup_kwargs):
    manager = register(any_adata, *seed_fields(**full_setup_kwargs))
    assert dict(manager.summary_stats) == {
        "n_cells": 40,
        "n_vars": 12,
        "n_batch": 2,
        "n_labels": 3,
        "n_extra_categorical_covs": 2,
        "n_extra_continuous_covs": 2,
        "n_proteins": 5,
    }
    shapes = {
        REGISTRY_KEYS.X_KEY: (40, 12),
        REGISTRY_KEYS.BATCH_KEY: (40, 1),
        REGISTRY_KEYS.LABELS_KEY: (40, 1),
        REGISTRY_KEYS.SIZE_FACTOR_KEY: (40, 1),
        REGISTRY_KEYS.CAT_COVS_KEY: (40, 2),
        REGISTRY_KEYS.CONT_COVS_KEY: (40, 2),
        REGISTRY_KEYS.PROTEIN_EXP_KEY: (40, 5),
    }
    assert set(manager.data_registry) == set(shapes)
    for key, shape in shapes.items():
        assert manager.get_from_registry(key).shape == shape, key


def test_seed_fields_minimal_summary_stats(adata, seed_fields):
    manager = register(adata, *seed_fields())
    assert dict(manager.summary_stats) == {
        "n_cells": 40,
        "n_vars": 12,
        "n_batch": 1,
        "n_labels": 1,
        "n_extra_categorical_covs": 0,
        "n_extra_continuous_covs": 0,
    }
    assert set(manager.data_registry) == {"X", "batch", "labels"}
