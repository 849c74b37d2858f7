"""``ObsmField``: a cells x columns matrix in ``adata.obsm`` (e.g. protein counts)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from cellvi.data.fields._base import KeyedField, require_key, store_c_contiguous
from cellvi.data.fields._checks import check_count_data, check_numeric_finite


class ObsmField(KeyedField):
    """Register ``adata.obsm[obsm_key]`` (array, sparse matrix or DataFrame).

    Parameters
    ----------
    registry_key
        Key under which the matrix reaches a module (e.g. ``REGISTRY_KEYS.PROTEIN_EXP_KEY``).
    obsm_key
        Key of ``adata.obsm``; None leaves an optional field empty.
    is_count_data
        Whether the matrix must hold raw counts.
    colnames_uns_key
        Key of ``adata.uns`` naming the columns when the matrix is not a DataFrame.
    required
        Whether ``obsm_key`` must be given.
    correct_data_format
        Rewrite a dense matrix (or a one-dtype DataFrame) stored in Fortran order in C order
        once registered, so that minibatch rows are contiguous.
    """

    attr_name = "obsm"
    key_description = "obsm key"
    array_entries = ("column_names",)

    def __init__(
        self,
        registry_key: str,
        obsm_key: str | None,
        is_count_data: bool = False,
        colnames_uns_key: str | None = None,
        required: bool = True,
        correct_data_format: bool = True,
    ) -> None:
        super().__init__(registry_key, obsm_key, required)
        self.is_count_data = is_count_data
        self.colnames_uns_key = colnames_uns_key
        self.correct_data_format = correct_data_format

    def _where(self) -> str:
        return f"adata.obsm[{self.attr_key!r}]"

    def validate_field(self, adata: AnnData) -> None:
        if self.is_empty:
            return
        require_key(adata, "obsm", self.attr_key, f"{self.registry_key} matrix")
        data = self.get_field_data(adata)
        if self.is_count_data:
            check_count_data(data, self._where())
        else:
            check_numeric_finite(data, self._where())

    def _column_names(self, adata: AnnData) -> list[str]:
        matrix = adata.obsm[self.attr_key]
        if isinstance(matrix, pd.DataFrame):
            return [str(column) for column in matrix.columns]
        if self.colnames_uns_key is not None:
            require_key(adata, "uns", self.colnames_uns_key, f"column names of {self._where()}")
            names = [str(name) for name in np.asarray(adata.uns[self.colnames_uns_key])]
            if len(names) != matrix.shape[1]:
                raise ValueError(
                    f"adata.uns[{self.colnames_uns_key!r}] names {len(names)} columns but "
                    f"{self._where()} has {matrix.shape[1]}."
                )
            return names
        return [str(index) for index in range(matrix.shape[1])]

    def register_field(self, adata: AnnData) -> dict[str, Any]:
        self.validate_field(adata)
        if self.is_empty:
            return {}
        return {"column_names": self._column_names(adata)}

    def transfer_field(
        self, state_registry: dict[str, Any], adata_target: AnnData, **kwargs: Any
    ) -> dict[str, Any]:
        state = self.register_field(adata_target)
        if state.get("column_names") != state_registry.get("column_names"):
            raise ValueError(
                f"{self._where()} of the new AnnData has columns {state.get('column_names')[:5]}"
                f"..., but the model was set up with {state_registry['column_names'][:5]}...; "
                "they must match in number and order."
            )
        return state

    def correct_layout(self, adata: AnnData) -> None:
        if self.correct_data_format and not self.is_empty:
            store_c_contiguous(adata, self.attr_name, self.attr_key)

    def get_summary_stats(self, state_registry: dict[str, Any]) -> dict[str, int]:
        return {f"n_{self.registry_key}": len(state_registry.get("column_names", []))}
