"""Shared parameter descriptions for the docstrings of ``setup_anndata`` methods."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any])

# Only ``%(name)s`` is a placeholder: any other "%" in a docstring is left as written.
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


class DocstringProcessor:
    """Fill ``%(name)s`` placeholders of docstrings with shared descriptions.

    Parameters
    ----------
    **params
        The descriptions, each a numpy-style parameter entry (name line, indented text).

    Examples
    --------
    >>> @setup_anndata_dsp.dedent
    ... def setup_anndata(cls, adata, batch_key=None):
    ...     '''%(summary)s.
    ...
    ...     Parameters
    ...     ----------
    ...     %(param_adata)s
    ...     %(param_batch_key)s
    ...     '''
    """

    def __init__(self, **params: str) -> None:
        self.params = dict(params)

    def dedent(self, function: T) -> T:
        """Dedent ``function``'s docstring and fill its placeholders (a decorator).

        The docstring is dedented first, so that the descriptions, written flush left, line up
        with it. A placeholder with no description is an error naming it.
        """
        if function.__doc__:
            function.__doc__ = self.dedent_text(function.__doc__)
        return function

    def dedent_text(self, text: str) -> str:
        """``text`` dedented, with its placeholders filled."""

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.params:
                raise KeyError(f"No shared description {name!r}; known: {sorted(self.params)}.")
            return self.params[name]

        return _PLACEHOLDER.sub(fill, inspect.cleandoc(text))


setup_anndata_dsp = DocstringProcessor(
    summary="Register an AnnData for this model: record where each field it reads lives",
    summary_mdata="Register a MuData for this model: record where each field it reads lives",
    param_adata="adata\n    AnnData of raw counts, cells by genes.",
    param_mdata="mdata\n    MuData whose modalities share the same cells.",
    param_batch_key=(
        "batch_key\n    Column of ``adata.obs`` naming each cell's batch; its categories are "
        "encoded as\n    integers in ``adata.obs['_scvi_batch']``. ``None``: one batch for all "
        "cells."
    ),
    param_sample_key=(
        "sample_key\n    Column of ``adata.obs`` naming each cell's sample, encoded in\n    "
        "``adata.obs['_scvi_sample']``. ``None``: one sample for all cells."
    ),
    param_labels_key=(
        "labels_key\n    Column of ``adata.obs`` naming each cell's label, encoded in\n    "
        "``adata.obs['_scvi_labels']``. ``None``: one label for all cells."
    ),
    param_layer=(
        "layer\n    Key of ``adata.layers`` holding the raw counts; ``None`` reads ``adata.X``."
    ),
    param_size_factor_key=(
        "size_factor_key\n    Column of ``adata.obs`` with each cell's size factor (linear "
        "scale, > 0), used\n    instead of the library size to scale expression."
    ),
    param_cat_cov_keys=(
        "categorical_covariate_keys\n    Columns of ``adata.obs`` with further categorical "
        "nuisance covariates (their\n    effect is removed from the latent space, like the "
        "batch's)."
    ),
    param_cont_cov_keys=(
        "continuous_covariate_keys\n    Columns of ``adata.obs`` with further numeric nuisance "
        "covariates."
    ),
    param_unlabeled_category=(
        "unlabeled_category\n    Value of ``adata.obs[labels_key]`` that marks cells without a "
        "label."
    ),
    param_modalities="modalities\n    Modality of the MuData that each parameter reads from.",
    param_copy="copy\n    Return a registered copy of the data, leaving the original as it is.",
    idx_layer="idx_layer\n    Modality of each feature, when the features of several are stacked.",
    returns=(
        "None. Adds ``adata.obs['_scvi_batch']`` and ``adata.obs['_scvi_labels']`` (integer "
        "codes) and\n``adata.uns['_scvi_uuid']`` (the AnnData's identity)."
    ),
)
