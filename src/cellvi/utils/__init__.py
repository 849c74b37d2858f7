"""Utilities every layer may use: attribute dicts, optional dependencies, shared docstrings."""

from cellvi.utils._attrdict import attrdict
from cellvi.utils._dependencies import (
    dependencies,
    error_on_missing_dependencies,
    is_package_installed,
)
from cellvi.utils._docstrings import DocstringProcessor, setup_anndata_dsp
from cellvi.utils._minified import unsupported_if_adata_minified

__all__ = [
    "DocstringProcessor",
    "attrdict",
    "dependencies",
    "error_on_missing_dependencies",
    "is_package_installed",
    "setup_anndata_dsp",
    "unsupported_if_adata_minified",
]
