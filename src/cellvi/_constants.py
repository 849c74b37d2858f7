"""Names every layer may read: the keys under which registered data reach a module."""

from __future__ import annotations

from typing import NamedTuple


class _RegistryKeys(NamedTuple):
    """Keys of the tensors dict a module receives (``tensors[REGISTRY_KEYS.BATCH_KEY]``)."""

    X_KEY: str = "X"
    BATCH_KEY: str = "batch"
    LABELS_KEY: str = "labels"
    PROTEIN_EXP_KEY: str = "proteins"
    CAT_COVS_KEY: str = "extra_categorical_covs"
    CONT_COVS_KEY: str = "extra_continuous_covs"
    INDICES_KEY: str = "ind_x"
    SIZE_FACTOR_KEY: str = "size_factor"
    SAMPLE_KEY: str = "sample"
    # Minified data: the stored latent posterior and library size, and how data were minified.
    MINIFY_TYPE_KEY: str = "minify_type"
    LATENT_QZM_KEY: str = "latent_qzm"
    LATENT_QZV_KEY: str = "latent_qzv"
    OBSERVED_LIB_SIZE: str = "observed_lib_size"


REGISTRY_KEYS = _RegistryKeys()
