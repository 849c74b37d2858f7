"""Small questions about registered data that models ask (scvi-tools' ``scvi.data._utils``)."""

from __future__ import annotations

import os

import h5py
from anndata import AnnData

from cellvi.data._constants import _ADATA_MINIFY_TYPE_UNS_KEY
from cellvi.data._mudata import AnnOrMuData, is_mudata


def _get_adata_minify_type(adata: AnnOrMuData) -> str | None:
    """How ``adata`` was minified (an ``ADATA_MINIFY_TYPE`` value), or None for full data."""
    return adata.uns.get(_ADATA_MINIFY_TYPE_UNS_KEY, None)


def _is_minified(adata: AnnOrMuData | str | os.PathLike) -> bool:
    """Whether an AnnData, a MuData or the ``.h5ad`` / ``.h5mu`` file at a path is minified.

    A path is answered from the file's ``uns`` group, without reading the data.
    """
    if isinstance(adata, AnnData) or is_mudata(adata):
        return _get_adata_minify_type(adata) is not None
    if isinstance(adata, str | os.PathLike):
        with h5py.File(adata, "r") as file:
            return "uns" in file and _ADATA_MINIFY_TYPE_UNS_KEY in file["uns"]
    raise TypeError(f"Expected an AnnData, a MuData or a file path, got {type(adata).__name__}.")
