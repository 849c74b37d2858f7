"""Trainable new rows of a lookup table whose reference rows stay frozen (reference mapping).

When a query brings new categories (scArches), a table with one row per category (a batch
embedding, the covariate columns of a linear map) grows: rows learnt on the reference must
not change, the new ones must train. A gradient mask on the grown table would not be enough:
weight decay, Adam's or AdamW's, moves an entry whatever its gradient. So the table ``W`` is
held as a sum ``W = T + D``: ``T``, the original parameter, frozen, keeps the frozen rows and
zeros in the others; ``D``, trainable, holds the other rows and zeros in the frozen ones,
whose gradient is masked. An entry that is zero and receives a zero gradient stays exactly
zero under every usual optimizer (SGD, Adam and AdamW, with or without weight decay), so the
frozen rows of ``W`` stay bit-identical while the others train as the rows of ``W`` would.

The owner of the table adds ``D``'s lookup to its own and stores ``W`` (not ``T`` and ``D``)
in its state dict, through :func:`merge_rows_into_tables` and :func:`split_rows_of_tables`,
so a model mapped this way saves and loads like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


class _FreezeRows:
    """Gradient hook zeroing the gradient of the given rows (picklable, device-agnostic)."""

    def __init__(self, rows: Sequence[int]) -> None:
        self.rows = list(rows)

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[self.rows] = 0.0
        return grad


class TrainableRows(torch.nn.Module):
    """The trainable part ``D`` of a table ``W = T + D`` with frozen rows (module docstring).

    Building it splits ``table`` in place: ``table`` (``T``) is frozen and keeps only the
    frozen rows (zeros elsewhere); ``delta`` (``D``) holds the other rows (zeros on the frozen
    ones, whose gradient it masks).

    Parameters
    ----------
    table
        The table, ``(n_rows, width)``, one row per category.
    frozen_rows
        The rows that keep their values: some but not all of the table's.
    """

    def __init__(self, table: torch.nn.Parameter, frozen_rows: Sequence[int]) -> None:
        super().__init__()
        self.frozen_rows = sorted({int(row) for row in frozen_rows})
        self.trained_rows = [r for r in range(table.shape[0]) if r not in self.frozen_rows]
        if not self.frozen_rows or not self.trained_rows:
            raise ValueError(
                f"frozen_rows must hold some but not all of the table's {table.shape[0]} rows, "
                f"got {self.frozen_rows}."
            )
        with torch.no_grad():
            delta = table.detach().clone()
            delta[self.frozen_rows] = 0.0
            table[self.trained_rows] = 0.0
        table.requires_grad_(False)
        self.delta = torch.nn.Parameter(delta)
        self.delta.register_hook(_FreezeRows(self.frozen_rows))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """The rows of ``D`` for ``codes`` (zeros for frozen categories)."""
        return F.embedding(codes, self.delta)

    def split(self, merged: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(T, D)`` of a whole table ``W``: frozen rows in ``T``, the others in ``D``."""
        table, delta = merged.clone(), merged.clone()
        table[self.trained_rows] = 0.0
        delta[self.frozen_rows] = 0.0
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
