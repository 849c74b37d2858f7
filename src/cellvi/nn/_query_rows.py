"""Trainable new rows of a lookup table whose reference rows stay frozen (reference mapping).

When a query brings new categories (scArches), a table with one row per category (a batch
embedding, the covariate columns of a linear map) grows: its first rows were learnt on the
reference and must not change, the new ones must train. A gradient mask on the grown table
would not be enough: weight decay, Adam's or AdamW's, moves an entry whatever its gradient.
So the table ``W`` is held as a sum ``W = T + D``: ``T``, the original parameter, frozen, keeps
the reference rows and zeros in the new ones; ``D``, trainable, holds the new rows and zeros
in the reference ones, whose gradient is masked. An entry that is zero and receives a zero
gradient stays exactly zero under every usual optimizer (SGD, Adam and AdamW, with or
without weight decay), so the reference rows of ``W`` stay bit-identical while the new rows
train as the rows of ``W`` would.

The owner of the table adds ``D``'s lookup to its own and stores ``W`` (not ``T`` and ``D``)
in its state dict, through :func:`merge_rows_into_tables` and :func:`split_rows_of_tables`,
so a model mapped this way saves and loads like any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F


class _FreezeFirstRows:
    """Gradient hook zeroing the gradient of the first ``n_rows`` rows (picklable)."""

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[: self.n_rows] = 0.0
        return grad


#: ``(name of the table in its owner's state dict, name of its TrainableRows, the rows)``.
RowSplit = tuple[str, str, "TrainableRows"]


class TrainableRows(torch.nn.Module):
    """The trainable part ``D`` of a grown table ``W = T + D`` (see the module docstring).

    Building it splits ``table`` in place: ``table`` (``T``) is frozen and its rows from
    ``n_frozen`` on are set to zero; ``delta`` (``D``) holds those rows and zeros above them.

    Parameters
    ----------
    table
        The grown table, ``(n_rows, width)``, one row per category.
    n_frozen
        How many leading rows are the reference's (``0 < n_frozen < n_rows``).
    """

    def __init__(self, table: torch.nn.Parameter, n_frozen: int) -> None:
        super().__init__()
        if not 0 < n_frozen < table.shape[0]:
            raise ValueError(
                f"n_frozen must be between 1 and the table's {table.shape[0] - 1} first rows, "
                f"got {n_frozen}."
            )
        self.n_frozen = n_frozen
        with torch.no_grad():
            delta = table.detach().clone()
            delta[:n_frozen] = 0.0
            table[n_frozen:] = 0.0
        table.requires_grad_(False)
        self.delta = torch.nn.Parameter(delta)
        self.delta.register_hook(_FreezeFirstRows(n_frozen))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """The rows of ``D`` for ``codes`` (zeros for reference categories)."""
        return F.embedding(codes, self.delta)

    def split(self, merged: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(T, D)`` of a whole table ``W``: reference rows in ``T``, new rows in ``D``."""
        table, delta = merged.clone(), merged.clone()
        table[self.n_frozen :] = 0.0
        delta[: self.n_frozen] = 0.0
        return table, delta


def merge_rows_into_tables(
    splits: Iterable[RowSplit], state_dict: dict[str, Any], prefix: str
) -> None:
    """Store each split table as its sum ``W = T + D`` under the table's own name."""
    for table_name, rows_name, _ in splits:
        delta = state_dict.pop(f"{prefix}{rows_name}.delta")
        key = f"{prefix}{table_name}"
        with torch.no_grad():
            state_dict[key] = state_dict[key].detach() + delta.detach()


def split_rows_of_tables(
    splits: Iterable[RowSplit], state_dict: dict[str, Any], prefix: str
) -> None:
    """Split each whole table ``W`` of a state dict into the ``T`` and ``D`` it loads into."""
    for table_name, rows_name, rows in splits:
        key, delta_key = f"{prefix}{table_name}", f"{prefix}{rows_name}.delta"
        if key in state_dict and delta_key not in state_dict:
            state_dict[key], state_dict[delta_key] = rows.split(state_dict[key])
