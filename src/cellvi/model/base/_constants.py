"""Names of the files and entries of a model saved by scvi-tools (read by cellvi)."""

from __future__ import annotations

from typing import NamedTuple


class _SaveKeys(NamedTuple):
    """File names in an scvi-tools model directory and the keys of its ``model.pt``."""

    ADATA_FNAME: str = "adata.h5ad"
    MDATA_FNAME: str = "mdata.h5mu"
    MODEL_FNAME: str = "model.pt"
    MODEL_STATE_DICT_KEY: str = "model_state_dict"
    VAR_NAMES_KEY: str = "var_names"
    ATTR_DICT_KEY: str = "attr_dict"
    LEGACY_MODEL_FNAME: str = "model_params.pt"
    LEGACY_VAR_NAMES_FNAME: str = "var_names.csv"
    LEGACY_SETUP_DICT_FNAME: str = "attr.pkl"


SAVE_KEYS = _SaveKeys()
