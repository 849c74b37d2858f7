"""The fields of a count model with batches, labels and covariates (scVI's, scANVI's)."""

from __future__ import annotations

from typing import Any

from cellvi.data import REGISTRY_KEYS
from cellvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
    NumericalObsField,
)


def count_model_fields(
    layer: str | None,
    batch_key: str | None,
    labels_field: Any,
    size_factor_key: str | None,
    categorical_covariate_keys: list[str] | None,
    continuous_covariate_keys: list[str] | None,
) -> list[Any]:
    """Counts, batch, ``labels_field``, size factor and covariates, in the registry's order."""
    return [
        LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
        CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
        labels_field,
        NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, required=False),
        CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
        NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
    ]
