"""``LabelsWithUnlabeledObsField``: labels where one category marks cells without a label."""

from __future__ import annotations

import warnings
from typing import Any

from anndata import AnnData

from cellvi.data.fields._obs import CategoricalObsField


class LabelsWithUnlabeledObsField(CategoricalObsField):
    """Register labels as codes, with the unlabeled category always the last code.

    Semi-supervised models (SCANVI) read the last code as "no label": the unlabeled category
    swaps places with the last category when the data hold it, and is appended otherwise, so
    that ``n_labels`` always counts it. Categories match by their string form, as for every
    categorical field.

    Parameters
    ----------
    registry_key
        Key under which the codes reach a module (``REGISTRY_KEYS.LABELS_KEY``).
    obs_key
        Column of ``adata.obs`` holding the labels, or None (every cell gets label 0, and the
        unlabeled category follows it).
    unlabeled_category
        The value of ``adata.obs[obs_key]`` that marks an unlabeled cell.
    """

    def __init__(
        self, registry_key: str, obs_key: str | None, unlabeled_category: str | int | float
    ) -> None:
        super().__init__(registry_key, obs_key)
        self.unlabeled_category = unlabeled_category

    def _with_unlabeled_last(self, mapping: list) -> list:
        mapping = list(mapping)
        names = [str(category) for category in mapping]
        unlabeled = str(self.unlabeled_category)
        if unlabeled not in names:
            return [*mapping, unlabeled]
        position = names.index(unlabeled)
        mapping[position], mapping[-1] = mapping[-1], mapping[position]
        return mapping

    def _categories(self, adata: AnnData) -> list:
        return self._with_unlabeled_last(super()._categories(adata))

    def _source_categories(self, state_registry: dict[str, Any]) -> list:
        return self._with_unlabeled_last(super()._source_categories(state_registry))

    def _encode(self, adata: AnnData, mapping: list, extend_categories: bool) -> dict[str, Any]:
        state = super()._encode(adata, mapping, extend_categories)
        state["unlabeled_category"] = self.unlabeled_category
        return state

    def transfer_field(
        self,
        state_registry: dict[str, Any],
        adata_target: AnnData,
        allow_missing_labels: bool = False,
        extend_categories: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Encode ``adata_target`` with the source's labels; new labels are always an error.

        Parameters
        ----------
        state_registry
            The source registration.
        adata_target
            The data to encode.
        allow_missing_labels
            When ``adata_target.obs`` lacks the labels column, create it with every cell
            unlabeled (with a warning) instead of raising.
        extend_categories
            Ignored: a query's labels must be among the reference's (its classifier has an
            output for each), so unseen labels are refused whatever this says.
        **kwargs
            Further transfer options, unused.
        """
        if (
            allow_missing_labels
            and self.obs_key is not None
            and self.obs_key not in adata_target.obs
        ):
            warnings.warn(
                f"adata.obs has no labels column {self.obs_key!r}; every cell is marked "
                f"unlabeled ({self.unlabeled_category!r}).",
                UserWarning,
                stacklevel=2,
            )
            adata_target.obs[self.obs_key] = self.unlabeled_category
        return super().transfer_field(state_registry, adata_target, extend_categories=False)
