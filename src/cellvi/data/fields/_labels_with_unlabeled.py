"""``LabelsWithUnlabeledObsField``: labels in which one category marks unlabeled cells."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from anndata import AnnData

from cellvi.data.fields._obs import CategoricalObsField


class LabelsWithUnlabeledObsField(CategoricalObsField):
    """Register an obs column of labels in which ``unlabeled_category`` marks unlabeled cells.

    The labels are encoded as by :class:`CategoricalObsField`, with the unlabeled category
    always last: where the column holds it, it swaps places with the last category; where it
    does not, it is added after the others. Semi-supervised models can then read the labeled
    classes as the codes ``0 .. n_labels - 2``. The state registry records
    ``unlabeled_category`` (as given) besides ``categorical_mapping`` and ``original_key``.

    Parameters
    ----------
    registry_key
        Key under which the codes reach a module (``REGISTRY_KEYS.LABELS_KEY``).
    obs_key
        Column of ``adata.obs`` holding the labels, or None (every cell then has the one
        label 0, so all cells count as labeled unless ``unlabeled_category`` is 0).
    unlabeled_category
        The label of unlabeled cells; compared with the labels by string form, as categories
        are registered.
    """

    UNLABELED_CATEGORY = "unlabeled_category"

    def __init__(
        self, registry_key: str, obs_key: str | None, unlabeled_category: str | int | float
    ) -> None:
        super().__init__(registry_key, obs_key)
        self._unlabeled_category = unlabeled_category

    @property
    def unlabeled_category(self) -> str | int | float:
        """The label of unlabeled cells, as given."""
        return self._unlabeled_category

    def _with_unlabeled_last(self, mapping: list) -> list:
        unlabeled = str(self._unlabeled_category)
        names = [str(category) for category in mapping]
        if unlabeled not in names:
            return [*mapping, self._unlabeled_category]
        mapping = list(mapping)
        position = names.index(unlabeled)
        mapping[position], mapping[-1] = mapping[-1], mapping[position]
        return mapping

    def _categories(self, adata: AnnData) -> list:
        return self._with_unlabeled_last(super()._categories(adata))

    def _source_categories(self, state_registry: dict[str, Any]) -> list:
        return self._with_unlabeled_last(super()._source_categories(state_registry))

    def _encode(self, adata: AnnData, mapping: list, extend_categories: bool) -> dict[str, Any]:
        if self.obs_key is None:
            # Every cell has the one label 0 (code 0), which may itself be the unlabeled one.
            adata.obs[self.attr_key] = np.zeros(adata.n_obs, dtype=np.int8)
            state = {"categorical_mapping": mapping, "original_key": None}
        else:
            # Query data never add labels: the classifier has one output per training label.
            state = super()._encode(adata, mapping, extend_categories=False)
        return {**state, self.UNLABELED_CATEGORY: self._unlabeled_category}

    def transfer_field(
        self,
        state_registry: dict[str, Any],
        adata_target: AnnData,
        allow_missing_labels: bool = False,
        extend_categories: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Encode ``adata_target`` with the source's labels.

        Parameters
        ----------
        state_registry
            The source registration's state registry.
        adata_target
            The new data.
        allow_missing_labels
            Where ``adata_target.obs`` lacks the labels column, fill it with the unlabeled
            category (with a warning) instead of failing.
        extend_categories
            Ignored for labels: unseen labels are always an error.
        **kwargs
            Ignored, as by the other fields.
        """
        if (
            allow_missing_labels
            and self.obs_key is not None
            and self.obs_key not in adata_target.obs
        ):
            warnings.warn(
                f"Missing labels key {self.obs_key!r}; every cell gets the unlabeled category "
                f"{self._unlabeled_category!r}.",
                UserWarning,
                stacklevel=2,
            )
            adata_target.obs[self.obs_key] = self._unlabeled_category
        return super().transfer_field(state_registry, adata_target, extend_categories=False)
