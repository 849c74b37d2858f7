"""Fields read from one ``adata.obs`` column: categorical codes or numbers."""

from __future__ import annotations

from typing import Any

import numpy as np
from anndata import AnnData
from rich.table import Table

from cellvi._constants import REGISTRY_KEYS
from cellvi.data.fields._base import BaseAnnDataField, KeyedField, internal_key, require_key
from cellvi.data.fields._categorical import (
    CategoricalEncoding,
    categories_of,
    category_table,
    encode_categories,
)
from cellvi.data.fields._checks import check_numeric_finite


class CategoricalObsField(CategoricalEncoding, BaseAnnDataField):
    """Register an obs column of categories as integer codes in ``obs["_scvi_<registry_key>"]``.

    With ``obs_key=None`` the field is still registered, as a single category (every cell
    gets code 0): a model then sees e.g. ``n_batch == 1`` and all-zero batch codes, so module
    code never needs a special case for "no batch".

    Parameters
    ----------
    registry_key
        Key under which the codes reach a module (``REGISTRY_KEYS.BATCH_KEY``, ...).
    obs_key
        Column of ``adata.obs`` holding the categories, or None.
    """

    attr_name = "obs"
    array_entries = ("categorical_mapping",)

    def __init__(self, registry_key: str, obs_key: str | None) -> None:
        self.registry_key = registry_key
        self.obs_key = obs_key
        self._codes_key = internal_key(registry_key)

    @property
    def attr_key(self) -> str:
        return self._codes_key

    def _where(self) -> str:
        return f"adata.obs[{self.obs_key!r}]"

    def validate_field(self, adata: AnnData) -> None:
        if self.obs_key is not None:
            require_key(adata, "obs", self.obs_key, f"{self.registry_key}_key")

    def _categories(self, adata: AnnData) -> list:
        return [0] if self.obs_key is None else categories_of(adata.obs[self.obs_key])

    def _source_categories(self, state_registry: dict[str, Any]) -> list:
        return state_registry["categorical_mapping"]

    def _encode(self, adata: AnnData, mapping: list, extend_categories: bool) -> dict[str, Any]:
        if self.obs_key is None:
            # Every cell is category 0; a subclass may append categories no cell holds.
            codes = np.zeros(adata.n_obs, dtype=np.int8)
        else:
            codes, mapping = encode_categories(
                adata.obs[self.obs_key], mapping, self._where(), extend_categories
            )
        adata.obs[self._codes_key] = codes
        return {"categorical_mapping": mapping, "original_key": self.obs_key}

    def get_summary_stats(self, state_registry: dict[str, Any]) -> dict[str, int]:
        return {f"n_{self.registry_key}": len(state_registry["categorical_mapping"])}

    def view_state_registry(self, state_registry: dict[str, Any]) -> Table | None:
        original = state_registry["original_key"]
        source = "(not set: one category)" if original is None else f"adata.obs[{original!r}]"
        return category_table(
            f"{self.registry_key} state registry", {source: state_registry["categorical_mapping"]}
        )


class NumericalObsField(KeyedField):
    """Register a numeric obs column (e.g. size factors) read as it is.

    Parameters
    ----------
    registry_key
        Key under which the values reach a module.
    attr_key
        Column of ``adata.obs``; None leaves an optional field empty.
    required
        Whether ``obs_key`` must be given.
    """

    attr_name = "obs"
    key_description = "obs column"

    def validate_field(self, adata: AnnData) -> None:
        if self.is_empty:
            return
        require_key(adata, "obs", self.attr_key, f"{self.registry_key}_key")
        where = f"adata.obs[{self.attr_key!r}]"
        values = adata.obs[self.attr_key].to_numpy()
        check_numeric_finite(values, where)
        if self.registry_key == REGISTRY_KEYS.SIZE_FACTOR_KEY and not (values > 0).all():
            # The model scales expression by log(size factor): zero or less has no log.
            raise ValueError(
                f"{where} holds {int((values <= 0).sum())} size factors <= 0; size factors must "
                "be positive. Filter out cells without counts, or recompute the factors."
            )

    def register_field(self, adata: AnnData) -> dict[str, Any]:
        self.validate_field(adata)
        return {"original_key": self.attr_key}

    def transfer_field(
        self, state_registry: dict[str, Any], adata_target: AnnData, **kwargs: Any
    ) -> dict[str, Any]:
        return self.register_field(adata_target)

    def get_summary_stats(self, state_registry: dict[str, Any]) -> dict[str, int]:
        return {}
