"""Utilities every layer may use: attribute dicts, optional dependencies, docstrings, progress."""

from cellvi.utils._attrdict import attrdict
from cellvi.utils._dependencies import (
    dependencies,
    error_on_missing_dependencies,
    is_package_installed,
)
from cellvi.utils._docstrings import DocstringProcessor, setup_anndata_dsp
from cellvi.utils._minified import unsupported_if_adata_minified
from cellvi.utils._progress import track

__all__ = [
    "DocstringProcessor",
    "attrdict",
    "dependencies",
    "error_on_missing_dependencies",
    "is_package_installed",
    "setup_anndata_dsp",
    "track",
    "unsupported_if_adata_minified",
]
