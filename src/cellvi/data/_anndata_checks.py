"""Checks on a whole AnnData (or MuData) before cellvi writes anything to it."""

from __future__ import annotations

import logging

from anndata import AnnData

from cellvi.data._mudata import AnnOrMuData, is_mudata

logger = logging.getLogger("cellvi")


def check_anndata(adata: AnnOrMuData) -> None:
    """Raise a clear error when ``adata`` cannot be registered as it is.

    A MuData is checked as a whole (not a view, every cell in every modality) and each of its
    modalities as an AnnData. A backed AnnData is accepted: its matrix stays on disk and
    minibatches read their rows from the file.
    """
    if is_mudata(adata):
        _check_mudata(adata)
        return
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
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


def _check_mudata(mdata: AnnOrMuData) -> None:
    if mdata.is_view:
        raise ValueError(
            "This MuData is a view (e.g. mdata[mask]); registration writes codes to it. Make it "
            "an object of its own first: mdata = mdata[mask].copy()."
        )
    for mod_key, modality in mdata.mod.items():
        try:
            check_anndata(modality)
        except ValueError as error:
            raise ValueError(f"Modality {mod_key!r} of this MuData: {error}") from error
        # Models read one row per cell from every modality they use.
        if not mdata.obsm[mod_key].all():
            n_missing = int((~mdata.obsm[mod_key]).sum())
            raise ValueError(
                f"Modality {mod_key!r} lacks {n_missing} of the MuData's cells; every modality "
                "must hold every cell. Pad the missing cells, or keep the cells all modalities "
                "share (muon.pp.intersect_obs(mdata))."
            )
