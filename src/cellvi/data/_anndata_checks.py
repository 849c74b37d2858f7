"""Checks on a whole AnnData before cellvi writes anything to it."""

from __future__ import annotations

import logging

from anndata import AnnData

logger = logging.getLogger("cellvi")


def check_anndata(adata: AnnData) -> None:
    """Raise a clear error when ``adata`` cannot be registered as it is."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    if adata.isbacked:
        raise ValueError(
            "This AnnData is opened backed (read_h5ad(..., backed='r')); cellvi reads the "
            "registered data into memory and does not train on backed data yet. Load it with "
            "adata = adata.to_memory() (or read_h5ad without backed=)."
        )
    if adata.is_view:
        raise ValueError(
            "This AnnData is a view (e.g. adata[mask]); registration writes codes to it, which "
            "would silently copy it. Make it an object of its own first: "
            "adata = adata[mask].copy()."
        )
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"This AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes); a model needs "
            "at least one cell and one gene. Check the filtering that produced it."
        )
    if not adata.var_names.is_unique:
        duplicated = adata.var_names[adata.var_names.duplicated()].unique()
        raise ValueError(
            f"adata.var_names has {len(duplicated)} duplicated names (e.g. "
            f"{list(duplicated[:3])}); genes are matched by name. Call "
            "adata.var_names_make_unique() first."
        )
    if not adata.obs_names.is_unique:
        logger.warning("adata.obs_names are not unique; consider adata.obs_names_make_unique().")
