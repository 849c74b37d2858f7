"""The keys cellvi writes on an AnnData when it registers it, and the keys of its registry."""

from __future__ import annotations

from typing import NamedTuple

# The names below keep scvi-tools' spelling on purpose: users' notebooks read
# ``adata.uns["_scvi_uuid"]`` and ``adata.obs["_scvi_batch"]``, and the seed-004 walk-through
# must run unchanged with ``import cellvi as scvi``.
SETUP_UUID_KEY = "_scvi_uuid"
MANAGER_UUID_KEY = "_scvi_manager_uuid"
INTERNAL_PREFIX = "_scvi_"

# scvi-tools' names for the same keys (``scvi.data._constants``).
_SCVI_UUID_KEY = SETUP_UUID_KEY
_MANAGER_UUID_KEY = MANAGER_UUID_KEY

# Keys of a registry (``AnnDataManager.registry``). A registry records the version of cellvi
# that wrote it; setup dictionaries of scvi-tools before 0.15 recorded scvi-tools' version.
_CELLVI_VERSION_KEY = "cellvi_version"
_SCVI_VERSION_KEY = "scvi_version"
_MODEL_NAME_KEY = "model_name"
_SETUP_METHOD_NAME = "setup_method_name"
_SETUP_ARGS_KEY = "setup_args"
_FIELD_REGISTRIES_KEY = "field_registries"
_DATA_REGISTRY_KEY = "data_registry"
_STATE_REGISTRY_KEY = "state_registry"
_SUMMARY_STATS_KEY = "summary_stats"

# Keys of a field's data registry: where its data live.
_DR_MOD_KEY = "mod_key"
_DR_ATTR_NAME = "attr_name"
_DR_ATTR_KEY = "attr_key"

# ``adata.uns`` key naming how an AnnData was minified (its counts replaced by latent
# posterior parameters), absent for a full AnnData.
_ADATA_MINIFY_TYPE_UNS_KEY = "_scvi_adata_minify_type"


class _ADATA_MINIFY_TYPE_NT(NamedTuple):  # scvi-tools' name
    LATENT_POSTERIOR: str = "latent_posterior_parameters"
    LATENT_POSTERIOR_WITH_COUNTS: str = "latent_posterior_parameters_with_counts"


#: The ways an AnnData can be minified.
ADATA_MINIFY_TYPE = _ADATA_MINIFY_TYPE_NT()


class _ADATA_ATTRS_NT(NamedTuple):  # scvi-tools' name
    X: str = "X"
    LAYERS: str = "layers"
    OBS: str = "obs"
    OBSM: str = "obsm"
    VAR: str = "var"
    VARM: str = "varm"
    UNS: str = "uns"


#: Names of the AnnData attributes a field may read.
_ADATA_ATTRS = _ADATA_ATTRS_NT()
