"""Fields that gather several obs columns into one ``adata.obsm`` table (extra covariates)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from rich.table import Table

from cellvi.data.fields._base import BaseAnnDataField, internal_key, require_key
from cellvi.data.fields._categorical import (
    CategoricalEncoding,
    categories_of,
    category_table,
    encode_categories,
)
from cellvi.data.fields._checks import check_numeric_finite


class _JointObsField(BaseAnnDataField):
    """Shared handling of a list of obs columns stored together in ``obsm["_scvi_<key>"]``.

    Parameters
    ----------
    registry_key
        Key under which the (n_cells, n_keys) table reaches a module.
    obs_keys
        Columns of ``adata.obs``; None or [] registers nothing.
    """

    attr_name = "obsm"

    def __init__(self, registry_key: str, obs_keys: list[str] | None) -> None:
        self.registry_key = registry_key
        self.obs_keys = list(obs_keys or [])
        duplicated = sorted({key for key in self.obs_keys if self.obs_keys.count(key) > 1})
        if duplicated:
            raise ValueError(f"Covariate keys for {registry_key!r} are repeated: {duplicated}.")
        self._table_key = internal_key(registry_key)

    @property
    def attr_key(self) -> str:
        return self._table_key

    @property
    def is_empty(self) -> bool:
        return not self.obs_keys

    def validate_field(self, adata: AnnData) -> None:
        for key in self.obs_keys:
            require_key(adata, "obs", key, f"covariate of {self.registry_key!r}")

    def _write_table(self, adata: AnnData, columns: dict[str, np.ndarray]) -> None:
        if not self.is_empty:
            adata.obsm[self._table_key] = pd.DataFrame(columns, index=adata.obs_names)

    def get_summary_stats(self, state_registry: dict[str, Any]) -> dict[str, int]:
        return {f"n_{self.registry_key}": len(self.obs_keys)}


class CategoricalJointObsField(CategoricalEncoding, _JointObsField):
    """Register several categorical obs columns (``categorical_covariate_keys``) as codes.

    Takes ``registry_key`` and ``obs_keys`` (see ``_JointObsField``); a module receives the
    (n_cells, n_keys) codes.
    """

    array_entries = ("mappings",)

    def _categories(self, adata: AnnData) -> dict[str, list]:
        return {key: categories_of(adata.obs[key]) for key in self.obs_keys}

    def _source_categories(self, state_registry: dict[str, Any]) -> dict[str, list]:
        # scvi-tools records an unset field as {} (no "mappings").
        return state_registry.get("mappings", {})

    def _encode(
        self, adata: AnnData, mappings: dict[str, list], extend_categories: bool
    ) -> dict[str, Any]:
        columns, new_mappings = {}, {}
        for key in self.obs_keys:
            columns[key], new_mappings[key] = encode_categories(
                adata.obs[key], mappings[key], f"adata.obs[{key!r}]", extend_categories
            )
        self._write_table(adata, columns)
        return {
            "mappings": new_mappings,
            "field_keys": self.obs_keys,
            "n_cats_per_key": [len(new_mappings[key]) for key in self.obs_keys],
        }

    def view_state_registry(self, state_registry: dict[str, Any]) -> Table | None:
        if self.is_empty:
            return None
        return category_table(
            f"{self.registry_key} state registry",
            {
                f"adata.obs[{key!r}]": mapping
                for key, mapping in state_registry["mappings"].items()
            },
        )


class NumericalJointObsField(_JointObsField):
    """Register several numeric obs columns (``continuous_covariate_keys``) as one float table.

    Takes ``registry_key`` and ``obs_keys`` (see ``_JointObsField``); the table keeps the
    columns' dtypes, and a module receives the (n_cells, n_keys) values as float32.
    """

    array_entries = ("columns",)

    def validate_field(self, adata: AnnData) -> None:
        super().validate_field(adata)
        for key in self.obs_keys:
            check_numeric_finite(adata.obs[key].to_numpy(), f"adata.obs[{key!r}]")

    def register_field(self, adata: AnnData) -> dict[str, Any]:
        self.validate_field(adata)
        self._write_table(adata, {key: adata.obs[key].to_numpy() for key in self.obs_keys})
        return {"columns": self.obs_keys}

    def transfer_field(
        self, state_registry: dict[str, Any], adata_target: AnnData, **kwargs: Any
    ) -> dict[str, Any]:
        return self.register_field(adata_target)

    def view_state_registry(self, state_registry: dict[str, Any]) -> Table | None:
        if self.is_empty:
            return None
        table = Table(title=f"{self.registry_key} state registry")
        table.add_column("Source location")
        for key in state_registry["columns"]:
            table.add_row(f"adata.obs[{key!r}]")
        return table
