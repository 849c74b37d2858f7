"""Old (scvi-tools < 0.15) setup dictionaries read as registries."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from cellvi.data import REGISTRY_KEYS, AnnDataManager
from cellvi.data._compat import LEGACY_REGISTRY_KEY_MAP, registry_from_setup_dict


class SCVI:
    """Stands for a model class: conversion reads only its name."""


class TOTALVI:
    pass


def legacy_setup_dict(protein: bool = False) -> dict:
    """An old ``adata.uns["_scvi"]`` of a setup of ``build_adata`` data (arrays, old keys)."""
    setup = {
        "scvi_version": "0.14.0",
        "categorical_mappings": {
            "_scvi_batch": {"original_key": "batch", "mapping": np.array(["a", "b"], object)},
            "_scvi_labels": {
                "original_key": "labels",
                "mapping": np.array(["B cell", "NK", "T cell"], object),
            },
        },
        "extra_categoricals": {
            "mappings": {"donor": np.array(["d1", "d2", "d3"]), "site": np.array(["s1", "s2"])},
            "keys": ["donor", "site"],
            "n_cats_per_key": [3, 2],
        },
        "extra_continuous_keys": np.array(["age", "pct_mito"], dtype=object),
        "data_registry": {
            "X": {"attr_name": "X", "attr_key": None},
            "batch_indices": {"attr_name": "obs", "attr_key": "_scvi_batch"},
            "labels": {"attr_name": "obs", "attr_key": "_scvi_labels"},
            "cat_covs": {"attr_name": "obsm", "attr_key": "_scvi_extra_categoricals"},
            "cont_covs": {"attr_name": "obsm", "attr_key": "_scvi_extra_continuous"},
            "unknown_old_key": {"attr_name": "obs", "attr_key": "whatever"},
        },
        "summary_stats": {"n_batch": 2, "n_cells": 40, "n_vars": 12, "n_labels": 3},
    }
    if protein:
        setup["data_registry"]["protein_expression"] = {
            "attr_name": "obsm",
            "attr_key": "protein_expression",
        }
        setup["protein_names"] = np.array(["prot_0", "prot_1", "prot_2"], dtype=object)
        setup["totalvi_batch_mask"] = {0: np.array([True, False, True]), 1: np.ones(3, bool)}
    return setup


def assert_subset(small, large, where="registry"):
    """Every entry of ``small`` is in ``large`` with an equal value."""
    for key, value in small.items():
        assert key in large, f"{where}[{key!r}] missing"
        if isinstance(value, dict):
            assert_subset(value, large[key], f"{where}[{key!r}]")
        else:
            assert value == large[key], f"{where}[{key!r}]: {value!r} != {large[key]!r}"


def test_legacy_keys_map_to_registry_keys():
    assert LEGACY_REGISTRY_KEY_MAP["batch_indices"] == REGISTRY_KEYS.BATCH_KEY
    assert LEGACY_REGISTRY_KEY_MAP["cat_covs"] == REGISTRY_KEYS.CAT_COVS_KEY
    assert LEGACY_REGISTRY_KEY_MAP["protein_expression"] == REGISTRY_KEYS.PROTEIN_EXP_KEY
    assert set(LEGACY_REGISTRY_KEY_MAP.values()) <= set(REGISTRY_KEYS)


def test_conversion_matches_a_fresh_registration(adata, seed_fields):
    setup = legacy_setup_dict()
    untouched = copy.deepcopy(setup)
    registry = registry_from_setup_dict(SCVI, setup)
    np.testing.assert_equal(setup, untouched)  # the input is left as it was
    json.dumps(registry)  # plain JSON, like every registry
    assert registry["model_name"] == "SCVI" and registry["scvi_version"] == "0.14.0"
    assert registry["setup_args"] == {
        "layer": None,
        "batch_key": "batch",
        "labels_key": "labels",
        "categorical_covariate_keys": ["donor", "site"],
        "continuous_covariate_keys": ["age", "pct_mito"],
    }
    fields = registry["field_registries"]
    assert set(fields) == {
        "X",
        "batch",
        "labels",
        "extra_categorical_covs",
        "extra_continuous_covs",
    }
    assert fields["extra_categorical_covs"]["data_registry"]["attr_key"] == (
        "_scvi_extra_categorical_covs"  # old names of cellvi's own columns follow the new keys
    )
    manager = AnnDataManager(seed_fields(**registry["setup_args"]))
    manager.register_fields(adata)
    assert_subset(fields, manager.registry["field_registries"])


def test_a_converted_registry_transfers_to_new_data(adata, seed_fields):
    registry = registry_from_setup_dict(SCVI, legacy_setup_dict())
    manager = AnnDataManager(seed_fields(**registry["setup_args"]))
    manager.register_fields(adata, source_registry=registry)
    assert manager.summary_stats.n_batch == 2 and manager.summary_stats.n_vars == 12
    codes = adata.obs["batch"].map({"a": 0, "b": 1}).astype(int).to_numpy()
    np.testing.assert_array_equal(adata.obs["_scvi_batch"], codes)
    adata.obs["labels"] = adata.obs["labels"].replace({"NK": "new"})
    with pytest.raises(ValueError, match=r"unseen at setup: \['new'\]"):
        AnnDataManager(seed_fields(**registry["setup_args"])).register_fields(
            adata, source_registry=registry
        )


def test_totalvi_proteins_and_scanvi_labels():
    registry = registry_from_setup_dict(TOTALVI, legacy_setup_dict(protein=True))
    fields = registry["field_registries"]
    # TOTALVI's old labels were one placeholder category and are no setup argument now.
    assert fields["labels"]["state_registry"]["categorical_mapping"] == [0]
    assert "labels_key" not in registry["setup_args"]
    assert registry["setup_args"]["protein_expression_obsm_key"] == "protein_expression"
    proteins = fields["proteins"]
    assert proteins["state_registry"]["column_names"] == ["prot_0", "prot_1", "prot_2"]
    assert proteins["state_registry"]["protein_batch_mask"] == {
        "0": [True, False, True],
        "1": [True, True, True],
    }
    assert proteins["summary_stats"] == {"n_proteins": 3}
    json.dumps(registry)

    scanvi = registry_from_setup_dict(SCVI, legacy_setup_dict(), unlabeled_category="Unknown")
    assert scanvi["setup_args"]["unlabeled_category"] == "Unknown"
    assert scanvi["field_registries"]["labels"]["state_registry"]["unlabeled_category"] == (
        "Unknown"
    )
