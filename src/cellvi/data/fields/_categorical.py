"""Mapping category names to integer codes, shared by the categorical fields."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from rich.table import Table


def categories_of(values: pd.Series) -> list[str]:
    """Categories of a column, by their string form, in order.

    A categorical keeps its declared order; other columns are sorted by value (so dates are
    chronological and numbers numeric), or kept in first-seen order when their values cannot
    be compared. Categories are registered by their string form (``str``), whatever their
    type: dates, numbers and booleans then encode the same way wherever they are read, and
    the registry stays plain JSON.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        ordered = pd.Series(values.cat.categories)
    else:
        ordered = pd.Series(pd.unique(values.dropna()))
        with contextlib.suppress(TypeError):  # mixed types cannot be ordered
            ordered = ordered.sort_values(kind="stable")
    return ordered.astype(str).tolist()


def encode_categories(
    values: pd.Series, mapping: list, where: str, extend_categories: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Encode ``values`` with the codes of ``mapping`` (matching by name, not position).

    Parameters
    ----------
    values
        The column to encode.
    mapping
        Known categories; category ``mapping[i]`` gets code ``i``. Compared by string form
        (registries written before categories were strings hold e.g. ints).
    where
        Readable location of the column, for error messages.
    extend_categories
        Append categories not in ``mapping`` instead of raising.

    Returns
    -------
    The integer codes (smallest signed dtype) and the possibly extended mapping.
    """
    n_missing = int(values.isna().sum())
    if n_missing:
        raise ValueError(
            f"{where} has {n_missing} missing values; every cell needs a category. Fill them "
            "(e.g. with 'unknown') or drop those cells before setup."
        )
    mapping = [str(category) for category in mapping]
    labels = values.astype(str).to_numpy(dtype=object)
    # Only the categories cells hold count: a declared but unused one needs no code.
    present = set(labels)
    known = set(mapping)
    unseen = [c for c in categories_of(values) if c in present and c not in known]
    if unseen:
        if not extend_categories:
            raise ValueError(
                f"{where} holds categories unseen at setup: {unseen[:10]}"
                f"{' ...' if len(unseen) > 10 else ''}. Known categories: {mapping[:10]}"
                f"{' ...' if len(mapping) > 10 else ''}. Drop those cells, or pass "
                "extend_categories=True to add them (the model has no trained weights for them)."
            )
        mapping = mapping + unseen
    codes = pd.Categorical(labels, categories=pd.Index(mapping, dtype=object)).codes
    return np.asarray(codes), mapping


def category_table(title: str, mappings: dict[str, list]) -> Table:
    """A table of codes: one block of (category, code) rows per source location."""
    table = Table(title=title)
    for column in ("Source location", "Category", "Code"):
        table.add_column(column)
    for source, mapping in mappings.items():
        for code, category in enumerate(mapping):
            table.add_row(source if code == 0 else "", str(category), str(code))
    return table


class CategoricalEncoding:
    """Registration of a field that stores category codes, from scratch or by transfer.

    Registering draws the categories from the data; transferring encodes new data with the
    categories of a source registration, so that each code keeps its meaning. A field
    provides ``_categories(adata)``, ``_source_categories(state_registry)`` and
    ``_encode(adata, categories, extend_categories)``, which writes the codes and returns the
    state registry.
    """

    def register_field(self, adata: AnnData) -> dict[str, Any]:
        """Register the field on ``adata`` with the categories found there."""
        self.validate_field(adata)
        return self._encode(adata, self._categories(adata), extend_categories=False)

    def transfer_field(
        self,
        state_registry: dict[str, Any],
        adata_target: AnnData,
        extend_categories: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Encode ``adata_target`` with the source's categories (new ones added if allowed)."""
        self.validate_field(adata_target)
        return self._encode(
            adata_target, self._source_categories(state_registry), extend_categories
        )
