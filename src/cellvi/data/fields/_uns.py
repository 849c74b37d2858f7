"""``StringUnsField``: one string of ``adata.uns`` (e.g. how the data were minified)."""

from __future__ import annotations

from typing import Any

from anndata import AnnData

from cellvi.data.fields._base import KeyedField, require_key


class StringUnsField(KeyedField):
    """Register the string ``adata.uns[uns_key]``; it describes the data, no cell reads it.

    Parameters
    ----------
    registry_key
        Key under which the value is registered (e.g. ``REGISTRY_KEYS.MINIFY_TYPE_KEY``).
    attr_key
        Key of ``adata.uns``; None leaves an optional field empty.
    required
        Whether ``uns_key`` must be given.
    """

    attr_name = "uns"
    key_description = "uns key"

    def validate_field(self, adata: AnnData) -> None:
        if self.is_empty:
            return
        require_key(adata, "uns", self.attr_key, f"{self.registry_key} value")
        if not isinstance(adata.uns[self.attr_key], str):
            raise TypeError(
                f"adata.uns[{self.attr_key!r}] must be a string, got "
                f"{type(adata.uns[self.attr_key]).__name__}."
            )

    def register_field(self, adata: AnnData) -> dict[str, Any]:
        self.validate_field(adata)
        return {}

    def transfer_field(
        self, state_registry: dict[str, Any], adata_target: AnnData, **kwargs: Any
    ) -> dict[str, Any]:
        # The value describes the target data themselves, so it is read there, not copied.
        return self.register_field(adata_target)

    def get_summary_stats(self, state_registry: dict[str, Any]) -> dict[str, Any]:
        return {}
