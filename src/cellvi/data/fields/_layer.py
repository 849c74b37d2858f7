"""``LayerField``: the expression matrix, from ``adata.X`` or a layer."""

from __future__ import annotations

from typing import Any

from anndata import AnnData

from cellvi._constants import REGISTRY_KEYS
from cellvi.data.fields._base import (
    BaseAnnDataField,
    FieldData,
    require_key,
    store_c_contiguous,
)
from cellvi.data.fields._checks import check_count_data, check_numeric_finite


class LayerField(BaseAnnDataField):
    """Register a cells x features matrix: ``adata.X`` (``layer=None``) or ``adata.layers[layer]``.

    Parameters
    ----------
    registry_key
        Key under which the matrix reaches a module, usually ``REGISTRY_KEYS.X_KEY``.
    layer
        Layer to read; ``None`` reads ``adata.X``.
    is_count_data
        Whether the matrix must hold raw counts (checked: NaN, Inf and negatives are errors,
        non-integers a warning).
    correct_data_format
        Rewrite a dense matrix stored in Fortran order in C order once registered, so that
        minibatch rows are contiguous.
    """

    array_entries = ("column_names",)

    def __init__(
        self,
        registry_key: str,
        layer: str | None,
        is_count_data: bool = True,
        correct_data_format: bool = True,
    ) -> None:
        self.registry_key = registry_key
        self.attr_name = "X" if layer is None else "layers"
        self._layer = layer
        self.is_count_data = is_count_data
        self.correct_data_format = correct_data_format
        # The main matrix reports its width as n_vars (what models read to size themselves).
        self._count_stat_key = (
            "n_vars" if registry_key == REGISTRY_KEYS.X_KEY else f"n_{registry_key}"
        )

    @property
    def attr_key(self) -> str | None:
        return self._layer

    def _where(self) -> str:
        return "adata.X" if self._layer is None else f"adata.layers[{self._layer!r}]"

    def validate_field(self, adata: AnnData) -> None:
        if self._layer is not None:
            require_key(adata, "layers", self._layer, f"layer for {self.registry_key!r}")
        data = self.get_field_data(adata)
        if data is None:
            raise ValueError(f"{self._where()} is empty (None); store the counts there first.")
        if self.is_count_data:
            check_count_data(data, self._where())
        else:
            check_numeric_finite(data, self._where())

    def register_field(self, adata: AnnData) -> dict[str, Any]:
        self.validate_field(adata)
        return {
            "layer": self._layer,
            "is_count_data": self.is_count_data,
            "n_cells": int(adata.n_obs),
            "n_vars": int(adata.n_vars),
            "column_names": [str(name) for name in adata.var_names],
        }

    def transfer_field(
        self, state_registry: dict[str, Any], adata_target: AnnData, **kwargs: Any
    ) -> dict[str, Any]:
        n_vars = state_registry["n_vars"]
        if adata_target.n_vars != n_vars:
            raise ValueError(
                f"The new AnnData has {adata_target.n_vars} genes but the model was set up with "
                f"{n_vars}. Subset it to the training genes, in the same order: "
                "adata = adata[:, model.adata.var_names].copy()."
            )
        # Registries converted from old setups know the number of genes only.
        expected = state_registry.get("column_names")
        found = [str(name) for name in adata_target.var_names]
        if expected is not None and found != expected:
            mismatched = [(e, f) for e, f in zip(expected, found, strict=True) if e != f]
            examples = ", ".join(f"{f!r} where {e!r} was expected" for e, f in mismatched[:3])
            raise ValueError(
                f"The new AnnData's genes differ from the training genes at {len(mismatched)} "
                f"positions ({examples}). Reorder or subset it to the training var_names."
            )
        return self.register_field(adata_target)

    def revalidate(self, adata: AnnData, state_registry: dict[str, Any]) -> None:
        """Check the genes are still the registered ones, in order (the counts are not rescanned).

        A matrix subset or reordered in place would otherwise be read against weights that
        belong to other genes.
        """
        if self._layer is not None:
            require_key(adata, "layers", self._layer, f"layer for {self.registry_key!r}")
        expected = state_registry["column_names"]
        found = [str(name) for name in adata.var_names]
        if found != expected:
            changed = [i for i, (e, f) in enumerate(zip(expected, found, strict=False)) if e != f]
            first = changed[0] if changed else min(len(expected), len(found))
            raise ValueError(
                f"The genes of this AnnData changed since it was registered: {len(found)} genes "
                f"now, {len(expected)} registered, first difference at position {first}. The "
                "model reads genes by position; restore the registered genes and order "
                "(adata = adata[:, registered_var_names].copy()), or set the data up again."
            )

    def correct_layout(self, adata: AnnData) -> None:
        if self.correct_data_format:
            store_c_contiguous(adata, self.attr_name, self._layer)

    def get_summary_stats(self, state_registry: dict[str, Any]) -> dict[str, int]:
        stats = {self._count_stat_key: state_registry["n_vars"]}
        # The main matrix also counts the cells; a second matrix (e.g. proteins) would repeat it.
        if self.registry_key == REGISTRY_KEYS.X_KEY:
            stats["n_cells"] = state_registry["n_cells"]
        return stats

    def get_field_data(self, adata: AnnData) -> FieldData:
        return adata.X if self._layer is None else adata.layers[self._layer]
