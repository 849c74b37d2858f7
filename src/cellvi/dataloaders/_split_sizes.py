"""How many cells go to train and validation, and what to do with a tiny last minibatch."""

from __future__ import annotations

import math
import warnings


def split_sizes(
    n_cells: int, train_size: float | None = None, validation_size: float | None = None
) -> tuple[int, int]:
    """Numbers of train and validation cells, before any minibatch adjustment.

    ``n_train = ceil(train_size * n_cells)`` and ``n_val = floor(n_cells * validation_size)``,
    computed on the floating-point products as scvi-tools does, so that both libraries split
    the same cells (``0.7 * 10`` is ``7.000000000000001`` and gives 8 train cells).

    Parameters
    ----------
    n_cells
        Number of cells to split.
    train_size
        Fraction of cells for training, in (0, 1]; ``None`` means 0.9.
    validation_size
        Fraction of cells for validation, in [0, 1); ``None`` takes every non-training cell.

    Returns
    -------
    ``(n_train, n_val)``; the test split takes what is left (see :func:`split_positions`).
    """
    train_size = 0.9 if train_size is None else float(train_size)
    if not 0.0 < train_size <= 1.0:
        raise ValueError("Invalid train_size. Must be: 0 < train_size <= 1")
    n_train = math.ceil(train_size * n_cells)
    if validation_size is None:
        n_val = n_cells - n_train
    elif not 0.0 <= validation_size < 1.0:
        raise ValueError("Invalid validation_size. Must be 0 <= validation_size < 1")
    elif train_size + validation_size > 1:
        raise ValueError("train_size + validation_size must be between 0 and 1")
    else:
        n_val = math.floor(n_cells * validation_size)
    if n_train == 0:
        raise ValueError(
            f"With n_samples={n_cells}, train_size={train_size} and "
            f"validation_size={validation_size}, the training set is empty; raise train_size "
            "or give more cells."
        )
    return n_train, n_val


def fit_last_minibatch(
    n_train: int,
    n_val: int,
    batch_size: int,
    drop_last: bool,
    move_to_validation: bool,
) -> tuple[int, int, bool]:
    """Deal with a last training minibatch of one or two cells.

    Batch normalisation gets no usable statistics from such a minibatch (one cell is an
    error in training mode). With the default ``train_size`` (``move_to_validation``) the
    few cells leave the training set, for the validation set when it has cells (else the
    test set), as scvi-tools does. With a train size the user chose, two cells stay with a
    warning; a single cell is refused before training (scvi-tools fails in batch norm at the
    first epoch's end instead), naming the two ways out.

    Returns
    -------
    ``(n_train, n_val, drop_last)``, adjusted.
    """
    remainder = n_train % batch_size
    # A training set smaller than one minibatch keeps its cells: moving them would empty it.
    if drop_last or remainder not in (1, 2) or n_train < batch_size:
        return n_train, n_val, drop_last
    if move_to_validation:
        if n_val > 0:
            warnings.warn(
                f"{remainder} cells moved from the training set to the validation set so that "
                "no training minibatch has fewer than 3 cells; pass train_size to keep them.",
                UserWarning,
                stacklevel=3,
            )
            return n_train - remainder, n_val + remainder, drop_last
        return n_train - remainder, n_val, drop_last
    if remainder == 1:
        raise ValueError(
            f"The last training minibatch would hold 1 cell ({n_train} training cells, "
            f"batch_size={batch_size}), which batch normalisation cannot train on. Pass "
            "datasplitter_kwargs={'drop_last': True}, or change batch_size or train_size."
        )
    warnings.warn(
        f"The last training minibatch has {remainder} cells (batch_size={batch_size}); "
        "change batch_size or the split to avoid it.",
        UserWarning,
        stacklevel=3,
    )
    return n_train, n_val, drop_last
