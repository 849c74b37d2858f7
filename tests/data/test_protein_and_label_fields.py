"""Protein fields (their batch masks) and ``LabelsWithUnlabeledObsField``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cellvi.data import REGISTRY_KEYS, AnnDataManager
from cellvi.data.fields import (
    CategoricalObsField,
    LabelsWithUnlabeledObsField,
    LayerField,
    ProteinLayerField,
    ProteinObsmField,
)


def protein_manager(adata, field_cls=ProteinObsmField, key="protein_expression", **kwargs):
    batch = CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, "batch")
    protein = field_cls(
        REGISTRY_KEYS.PROTEIN_EXP_KEY, key, batch_field=batch, is_count_data=True, **kwargs
    )
    manager = AnnDataManager([LayerField(REGISTRY_KEYS.X_KEY, None), batch, protein])
    manager.register_fields(adata)
    return manager


def test_proteins_all_measured_have_no_mask(adata):
    manager = protein_manager(adata, colnames_uns_key="protein_names")
    state = manager.get_state_registry(REGISTRY_KEYS.PROTEIN_EXP_KEY)
    assert "protein_batch_mask" not in state
    np.testing.assert_array_equal(state.column_names, adata.uns["protein_names"])
    assert manager.summary_stats.n_proteins == 5


def test_a_protein_missing_from_a_batch_is_masked_there(adata, make_adata):
    in_b = (adata.obs["batch"] == "b").to_numpy()
    adata.obsm["protein_expression"][in_b, 1] = 0  # protein 1 not measured in batch "b"
    manager = protein_manager(adata)
    raw = manager.registry["field_registries"]["proteins"]["state_registry"]
    assert raw["protein_batch_mask"] == {
        "0": [True] * 5,
        "1": [True, False, True, True, True],
    }
    json.dumps(raw)
    view = manager.get_state_registry(REGISTRY_KEYS.PROTEIN_EXP_KEY).protein_batch_mask
    assert view["1"].dtype == bool and not view["1"][1]
    # A transfer computes the mask of the new data's batches.
    target = make_adata(seed=3)
    new = manager.transfer_fields(target)
    assert "protein_batch_mask" not in new.get_state_registry(REGISTRY_KEYS.PROTEIN_EXP_KEY)


def test_protein_layer_field_reads_a_layer(adata):
    adata.layers["counts"][(adata.obs["batch"] == "a").to_numpy(), 2] = 0
    manager = protein_manager(adata, ProteinLayerField, "counts")
    state = manager.get_state_registry(REGISTRY_KEYS.PROTEIN_EXP_KEY)
    assert not state.protein_batch_mask["0"][2] and state.protein_batch_mask["1"][2]
    # n_proteins, and n_cells from the main matrix only (never given twice).
    assert manager.summary_stats.n_proteins == 12 and manager.summary_stats.n_cells == 40


def test_the_batch_mask_needs_the_batch_field():
    with pytest.raises(ValueError, match="needs the batch field"):
        ProteinObsmField(REGISTRY_KEYS.PROTEIN_EXP_KEY, "protein_expression")
    field = ProteinObsmField(REGISTRY_KEYS.PROTEIN_EXP_KEY, "x", use_batch_mask=False)
    assert field.batch_field is None


# Labels with an unlabeled category ----------------------------------------------------------


def labels_manager(adata, unlabeled="Unknown"):
    field = LabelsWithUnlabeledObsField(REGISTRY_KEYS.LABELS_KEY, "labels", unlabeled)
    manager = AnnDataManager([LayerField(REGISTRY_KEYS.X_KEY, None), field])
    manager.register_fields(adata)
    return manager


def test_the_unlabeled_category_takes_the_last_code(adata):
    adata.obs["labels"] = adata.obs["labels"].replace({"B cell": "Unknown"})
    manager = labels_manager(adata)
    state = manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
    # Sorted ["NK", "T cell", "Unknown"]: already last. With "NK" unlabeled, it swaps with
    # the last category.
    assert list(state.categorical_mapping) == ["NK", "T cell", "Unknown"]
    assert state.unlabeled_category == "Unknown"
    other_adata = adata.copy()  # the manager holds its AnnData weakly
    other = labels_manager(other_adata, unlabeled="NK")
    assert list(other.get_state_registry("labels").categorical_mapping) == [
        "Unknown",
        "T cell",
        "NK",
    ]
    codes = other.get_from_registry(REGISTRY_KEYS.LABELS_KEY).ravel()
    assert (codes[(other_adata.obs["labels"] == "NK").to_numpy()] == 2).all()


def test_an_absent_unlabeled_category_is_appended(adata):
    manager = labels_manager(adata)
    assert list(manager.get_state_registry("labels").categorical_mapping) == [
        "B cell",
        "NK",
        "T cell",
        "Unknown",
    ]
    assert manager.summary_stats.n_labels == 4


def test_transfer_refuses_new_labels_and_can_fill_missing_ones(adata, make_adata):
    manager = labels_manager(adata)
    query = make_adata(seed=2)
    query.obs["labels"] = query.obs["labels"].replace({"NK": "ILC"})
    with pytest.raises(ValueError, match=r"unseen at setup: \['ILC'\]"):
        manager.transfer_fields(query, extend_categories=True)
    unlabeled = make_adata(seed=3)
    del unlabeled.obs["labels"]
    with pytest.warns(UserWarning, match="every cell gets the unlabeled category"):
        new = manager.transfer_fields(unlabeled, allow_missing_labels=True)
    assert (new.get_from_registry(REGISTRY_KEYS.LABELS_KEY) == 3).all()


def test_a_failed_transfer_removes_the_filled_labels(adata, make_adata, assert_unchanged):
    field = LabelsWithUnlabeledObsField(REGISTRY_KEYS.LABELS_KEY, "labels", "Unknown")
    manager = AnnDataManager([field, CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, "batch")])
    manager.register_fields(adata)
    query = make_adata(seed=3, batches=["a", "z"])  # an unseen batch fails after the labels
    del query.obs["labels"]
    before = query.copy()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"\['z'\]"):
        manager.transfer_fields(query, allow_missing_labels=True)
    assert_unchanged(before, query)
