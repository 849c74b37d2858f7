"""``LabelsWithUnlabeledObsField``: labels with an unlabeled category kept last."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from cellvi.data import REGISTRY_KEYS, AnnDataManager
from cellvi.data.fields import LabelsWithUnlabeledObsField

LABELS = REGISTRY_KEYS.LABELS_KEY


def labeled_adata(labels: list) -> AnnData:
    adata = AnnData(np.ones((len(labels), 2), dtype=np.float32))
    adata.obs["cell_type"] = labels
    return adata


def register(adata: AnnData, unlabeled: str | int) -> AnnDataManager:
    field = LabelsWithUnlabeledObsField(LABELS, "cell_type", unlabeled)
    manager = AnnDataManager(fields=[field])
    manager.register_fields(adata)
    return manager


def decoded(manager: AnnDataManager) -> list[str]:
    mapping = manager.get_state_registry(LABELS)["categorical_mapping"]
    return [str(mapping[code]) for code in manager.get_from_registry(LABELS).ravel()]


def test_the_unlabeled_category_swaps_places_with_the_last():
    labels = ["T", "?", "B", "NK", "?", "B"]
    adata = labeled_adata(labels)  # kept alive here: the manager refers to it weakly
    manager = register(adata, "?")
    state = manager.get_state_registry(LABELS)
    # Sorted categories are ["?", "B", "NK", "T"]: "?" and "T" trade places.
    assert list(state["categorical_mapping"]) == ["T", "B", "NK", "?"]
    assert state["unlabeled_category"] == "?" and state["original_key"] == "cell_type"
    assert decoded(manager) == labels  # codes still mean each cell's own label
    assert manager.summary_stats.n_labels == 4
    json.dumps(manager.registry)  # the registry itself stays plain JSON


def test_an_absent_unlabeled_category_is_added_last():
    adata = labeled_adata(["b", "a", "b"])
    manager = register(adata, "Unknown")
    assert list(manager.get_state_registry(LABELS)["categorical_mapping"]) == ["a", "b", "Unknown"]
    assert manager.summary_stats.n_labels == 3
    assert decoded(manager) == ["b", "a", "b"]


def test_numeric_unlabeled_categories_match_by_string_form():
    adata = labeled_adata([2, 0, 1, 0])
    manager = register(adata, 0)
    assert list(manager.get_state_registry(LABELS)["categorical_mapping"]) == ["2", "1", "0"]
    assert decoded(manager) == ["2", "0", "1", "0"]


def test_without_a_labels_column_every_cell_has_label_zero():
    adata = labeled_adata(["x"] * 3)
    field = LabelsWithUnlabeledObsField(LABELS, None, "Unknown")
    manager = AnnDataManager(fields=[field])
    manager.register_fields(adata)
    assert list(manager.get_state_registry(LABELS)["categorical_mapping"]) == [0, "Unknown"]
    np.testing.assert_array_equal(manager.get_from_registry(LABELS).ravel(), [0, 0, 0])


def test_transfer_keeps_the_codes_and_never_adds_labels():
    adata = labeled_adata(["T", "?", "B"])
    source = register(adata, "?")
    query = labeled_adata(["?", "B", "?"])
    target = source.transfer_fields(query, extend_categories=True)
    assert list(target.get_state_registry(LABELS)["categorical_mapping"]) == ["T", "B", "?"]
    assert decoded(target) == ["?", "B", "?"]
    with pytest.raises(ValueError, match="unseen at setup: \\['NK'\\]"):
        source.transfer_fields(labeled_adata(["NK", "B"]), extend_categories=True)


def test_transfer_may_fill_missing_labels_with_the_unlabeled_category():
    adata = labeled_adata(["T", "?", "B"])
    source = register(adata, "?")
    query = AnnData(np.ones((2, 2), dtype=np.float32))
    with pytest.raises(KeyError, match="cell_type"):
        source.transfer_fields(query)
    with pytest.warns(UserWarning, match="Missing labels key 'cell_type'"):
        target = source.transfer_fields(query, allow_missing_labels=True)
    assert list(query.obs["cell_type"]) == ["?", "?"]
    assert decoded(target) == ["?", "?"]


def test_categorical_columns_keep_declared_order_with_unlabeled_last():
    adata = labeled_adata(["a", "u", "c"])
    adata.obs["cell_type"] = pd.Categorical(["a", "u", "c"], categories=["u", "c", "a"])
    manager = register(adata, "u")
    assert list(manager.get_state_registry(LABELS)["categorical_mapping"]) == ["a", "c", "u"]
    assert decoded(manager) == ["a", "u", "c"]
