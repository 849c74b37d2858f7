"""The VAE arguments a model's registry fixes: genes, batches, covariates, library sizes."""

from __future__ import annotations

from typing import Any

from cellvi.data import REGISTRY_KEYS
from cellvi.data._constants import ADATA_MINIFY_TYPE
from cellvi.model._library_prior import library_size_prior


def registry_module_sizes(model: Any, use_observed_lib_size: bool) -> dict[str, Any]:
    """``n_input``, ``n_batch``, the covariates and the library prior of ``model``'s registry.

    The log-normal library prior (learnt library sizes without size factors) is estimated
    from the counts, so it needs the model's AnnData; data minified without counts need none
    (their model never trains).
    """
    stats = model.summary_stats
    fields = model.registry["field_registries"]
    cat_covs = fields.get(REGISTRY_KEYS.CAT_COVS_KEY, {}).get("state_registry", {})
    n_cats_per_cov = cat_covs.get("n_cats_per_key") or None
    n_batch = stats.get("n_batch", 0)
    use_size_factor_key = bool(fields.get(REGISTRY_KEYS.SIZE_FACTOR_KEY, {}).get("data_registry"))
    without_counts = (
        getattr(model, "minified_data_type", None) == ADATA_MINIFY_TYPE.LATENT_POSTERIOR
    )
    library_log_means = library_log_vars = None
    if not use_size_factor_key and not use_observed_lib_size and not without_counts:
        if model._adata_manager is None:
            raise ValueError(
                "use_observed_lib_size=False estimates the library size prior from the "
                "counts, which a model built from a registry alone does not have; pass "
                "adata."
            )
        library_log_means, library_log_vars = library_size_prior(model.adata_manager, n_batch)
    return {
        "n_input": stats["n_vars"],
        "n_batch": n_batch,
        "n_continuous_cov": stats.get("n_extra_continuous_covs", 0),
        "n_cats_per_cov": None if n_cats_per_cov is None else list(n_cats_per_cov),
        "use_size_factor_key": use_size_factor_key,
        "library_log_means": library_log_means,
        "library_log_vars": library_log_vars,
    }
