"""``default_max_epochs``: a training length that shrinks as datasets grow."""

from __future__ import annotations


def default_max_epochs(n_cells: int) -> int:
    """Return scvi-tools' default number of epochs for ``n_cells`` training cells.

    ``min(round(20_000 / n_cells * 400), 400)``, at least 1: about 8 million cell passes,
    capped at 400 epochs for small datasets.
    """
    if n_cells < 1:
        raise ValueError(f"n_cells must be positive, got {n_cells}.")
    return max(1, min(round(20_000 / n_cells * 400), 400))
