"""Reading the setup dictionaries of scvi-tools before 0.15 as registries."""

from __future__ import annotations

from typing import Any

import numpy as np

from cellvi._constants import REGISTRY_KEYS
from cellvi.data import _constants as keys

#: Keys of the old setup dictionary's data registry, and the registry keys they became.
LEGACY_REGISTRY_KEY_MAP = {
    "X": REGISTRY_KEYS.X_KEY,
    "batch_indices": REGISTRY_KEYS.BATCH_KEY,
    "labels": REGISTRY_KEYS.LABELS_KEY,
    "cat_covs": REGISTRY_KEYS.CAT_COVS_KEY,
    "cont_covs": REGISTRY_KEYS.CONT_COVS_KEY,
    "protein_expression": REGISTRY_KEYS.PROTEIN_EXP_KEY,
    "ind_x": REGISTRY_KEYS.INDICES_KEY,
}

_OBS_SUMMARY_KEY = {REGISTRY_KEYS.BATCH_KEY: "n_batch", REGISTRY_KEYS.LABELS_KEY: "n_labels"}


def registry_from_setup_dict(
    model_cls: type, setup_dict: dict[str, Any], unlabeled_category: str | None = None
) -> dict[str, Any]:
    """Convert an old setup dictionary (``adata.uns["_scvi"]``) into a registry.

    The registry has the layout ``AnnDataManager.registry`` records: a field registry per
    registry key (data location, state, summary statistics) and the setup arguments that
    ``model_cls.setup_anndata`` would need to register the same fields. Categories are kept
    by their string form and arrays become lists, as in every cellvi registry. The input is
    left unchanged.

    Parameters
    ----------
    model_cls
        The model class that made the setup (its name picks the setup arguments: TOTALVI
        registered labels it no longer takes).
    setup_dict
        The old setup dictionary.
    unlabeled_category
        The unlabeled category of a SCANVI setup.
    """
    categorical = setup_dict["categorical_mappings"]
    stats = setup_dict[keys._SUMMARY_STATS_KEY]
    is_totalvi = model_cls.__name__ == "TOTALVI"
    field_registries: dict[str, Any] = {}
    setup_args: dict[str, Any] = {}
    for legacy_key, location in setup_dict[keys._DATA_REGISTRY_KEY].items():
        if legacy_key not in LEGACY_REGISTRY_KEY_MAP:
            continue
        key = LEGACY_REGISTRY_KEY_MAP[legacy_key]
        attr_name, attr_key = location[keys._DR_ATTR_NAME], location[keys._DR_ATTR_KEY]
        state: dict[str, Any] = {}
        summary: dict[str, Any] = {}
        if attr_name in (keys._ADATA_ATTRS.X, keys._ADATA_ATTRS.LAYERS):
            setup_args["layer"] = attr_key
            state["n_vars"] = summary["n_vars"] = int(stats["n_vars"])
        elif attr_name == keys._ADATA_ATTRS.OBS:
            mapping = categorical[attr_key]
            # TOTALVI's labels were one placeholder category, and are no setup argument now.
            default_labels = is_totalvi and key == REGISTRY_KEYS.LABELS_KEY
            state["categorical_mapping"] = [0] if default_labels else _names(mapping["mapping"])
            state["original_key"] = mapping["original_key"]
            if key in _OBS_SUMMARY_KEY:
                summary[f"n_{key}"] = int(stats[_OBS_SUMMARY_KEY[key]])
                if not default_labels:
                    setup_args[f"{key}_key"] = mapping["original_key"]
            if key == REGISTRY_KEYS.LABELS_KEY and unlabeled_category is not None:
                state["unlabeled_category"] = unlabeled_category
        elif attr_name == keys._ADATA_ATTRS.OBSM:
            state, summary = _obsm_state(key, attr_key, setup_dict, setup_args)
        if attr_key is not None and attr_key.startswith(keys.INTERNAL_PREFIX):
            # Old setups named cellvi's own columns after the old keys (_scvi_batch_indices).
            attr_key = f"{keys.INTERNAL_PREFIX}{key}"
        field_registries[key] = {
            keys._DATA_REGISTRY_KEY: {keys._DR_ATTR_NAME: attr_name, keys._DR_ATTR_KEY: attr_key},
            keys._STATE_REGISTRY_KEY: state,
            keys._SUMMARY_STATS_KEY: summary,
        }
    if unlabeled_category is not None:
        setup_args["unlabeled_category"] = unlabeled_category
    return {
        keys._SCVI_VERSION_KEY: setup_dict[keys._SCVI_VERSION_KEY],
        keys._MODEL_NAME_KEY: model_cls.__name__,
        keys._SETUP_METHOD_NAME: "setup_anndata",
        keys._SETUP_ARGS_KEY: setup_args,
        keys._FIELD_REGISTRIES_KEY: field_registries,
    }


def _obsm_state(
    key: str, attr_key: str, setup_dict: dict[str, Any], setup_args: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """State and summary statistics of a legacy obsm entry; records its setup arguments."""
    if key == REGISTRY_KEYS.CONT_COVS_KEY:
        columns = _names(setup_dict["extra_continuous_keys"])
        setup_args["continuous_covariate_keys"] = columns
        return {"columns": columns}, {f"n_{key}": len(columns)}
    if key == REGISTRY_KEYS.CAT_COVS_KEY:
        covariates = setup_dict["extra_categoricals"]
        obs_keys = _names(covariates["keys"])
        setup_args["categorical_covariate_keys"] = obs_keys
        state = {
            "mappings": {name: _names(values) for name, values in covariates["mappings"].items()},
            "field_keys": obs_keys,
            "n_cats_per_key": [int(n) for n in covariates["n_cats_per_key"]],
        }
        return state, {f"n_{key}": len(obs_keys)}
    if key == REGISTRY_KEYS.PROTEIN_EXP_KEY:
        setup_args["protein_expression_obsm_key"] = attr_key
        setup_args["protein_names_uns_key"] = "_protein_names"
        names = _names(setup_dict["protein_names"])
        state: dict[str, Any] = {"column_names": names}
        if "totalvi_batch_mask" in setup_dict:
            state["protein_batch_mask"] = {
                str(batch): np.asarray(measured, dtype=bool).tolist()
                for batch, measured in setup_dict["totalvi_batch_mask"].items()
            }
        return state, {f"n_{key}": len(names)}
    return {}, {}


def _names(values: Any) -> list[str]:
    """Categories or column names by their string form, as registries keep them."""
    return [str(value) for value in np.asarray(values, dtype=object).ravel()]
