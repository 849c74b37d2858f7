"""``plot_history``: the ELBO and its terms per epoch, for training and validation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cellvi.plotting._figures import finish_figure, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SPLITS = ("train", "validation")
#: What is drawn by default, in this order, with the panels' titles: the ELBO, its terms,
#: and a classifier's loss and accuracy (SCANVI). Any other metric logged per split can be
#: asked for by name.
TERMS = {
    "elbo": "negative ELBO per cell (lower is better)",
    "reconstruction_loss": "reconstruction loss per cell",
    "kl_local": "local KL divergence per cell",
    "kl_global": "global KL divergence",
    "classification_loss": "classification loss",
    "accuracy": "classification accuracy",
}
_COLORS = {"train": "#1f77b4", "validation": "#ff7f0e"}
_LABELS = {"train": "training", "validation": "validation"}


def history_table(history: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """A model's per-epoch metrics in one table: one column per metric, one row per epoch.

    Parameters
    ----------
    history
        A model's ``history``: one single-column DataFrame per metric. Metrics indexed by
        step (per-step logging) are left out. Epochs a metric was not logged in (validation
        runs every few epochs, say) are NaN.
    """
    frames = [frame for frame in history.values() if frame.index.name != "step"]
    if not frames:
        return pd.DataFrame(index=pd.Index([], name="epoch"))
    table = pd.concat(frames, axis=1).sort_index()
    table.index.name = "epoch"
    return table


def history_terms(table: pd.DataFrame, every: bool = False) -> list[str]:
    """The metrics logged per split in ``table``, by their names without the split.

    ``elbo`` for ``elbo_train`` / ``elbo_validation``, ``accuracy`` for ``train_accuracy``
    (the two ways cellvi's plans name them); the minimised loss (``train_loss``, with the KL
    warm-up) is left out. Those of :data:`TERMS` come first, in its order; the others only
    with ``every``, by name.
    """
    found = set()
    for column in table.columns:
        for split in SPLITS:
            if column.endswith(f"_{split}") and len(column) > len(split) + 1:
                found.add(column[: -len(split) - 1])
            elif column.startswith(f"{split}_") and len(column) > len(split) + 1:
                found.add(column[len(split) + 1 :])
    found.discard("loss")
    known = [term for term in TERMS if term in found]
    return known + sorted(found - set(TERMS)) if every else known


def metric_column(table: pd.DataFrame, term: str, split: str) -> str | None:
    """The column of ``term`` for ``split`` (``elbo_train``, ``train_accuracy``), if any."""
    for column in (f"{term}_{split}", f"{split}_{term}"):
        if column in table:
            return column
    return None


def plot_history(
    history: Mapping[str, pd.DataFrame],
    terms: Sequence[str] | None = None,
    path: str | Path | None = None,
    title: str | None = None,
    panel_size: tuple[float, float] = (4.5, 3.2),
    dpi: float = 100,
) -> Figure:
    """Plot the ELBO and its terms per epoch, training and validation, one panel per term.

    The ELBO is shown as scvi-tools logs it, the negative ELBO per cell (lower is better),
    without the KL warm-up weight; the validation curve appears when the fit validated
    (``check_val_every_n_epoch``). Epochs are numbered from 1, as in the progress bar.

    Parameters
    ----------
    history
        A model's ``history`` (``model.history``).
    terms
        Metrics to draw, by the name they are logged under without the split (``"elbo"``,
        ``"kl_local"``, ``"f1_score"``, ...); default the ELBO and its terms, and a
        classifier's loss and accuracy when the model has one.
    path
        Also write the figure there (PNG unless the suffix says otherwise).
    title
        Title over the panels.
    panel_size
        Width and height of one panel, in inches.
    dpi
        Resolution: a PNG is ``panel_size * (columns, rows) * dpi`` pixels.

    Returns
    -------
    The matplotlib ``Figure`` (drawn on its own canvas, so no ``pyplot`` state changes).
    """
    from matplotlib.ticker import MaxNLocator

    table = history_table(history)
    available = history_terms(table, every=terms is not None)
    if not available:
        raise ValueError(
            "The history holds no metric logged per epoch for the training or validation "
            "cells (elbo_train, ...); train the model first."
        )
    if terms is None:
        terms = available
    else:
        terms = list(terms)
        unknown = [term for term in terms if term not in available]
        if unknown:
            raise ValueError(f"No such terms in the history: {unknown}; it has {available}.")
        if not terms:
            raise ValueError("Give at least one term to plot.")
    n_columns = 1 if len(terms) == 1 else 2 if len(terms) <= 4 else 3
    n_rows = math.ceil(len(terms) / n_columns)
    figure = new_figure((panel_size[0] * n_columns, panel_size[1] * n_rows), dpi)
    axes = figure.subplots(n_rows, n_columns, squeeze=False).ravel()
    for ax, term in zip(axes, terms, strict=False):
        for split in SPLITS:
            column = metric_column(table, term, split)
            if column is None:
                continue
            values = table[column].dropna()
            epochs = np.asarray(values.index) + 1
            ax.plot(
                epochs,
                values.to_numpy(),
                color=_COLORS[split],
                label=_LABELS[split],
                marker="o" if split == "validation" or len(values) <= 20 else None,
                markersize=3,
                linewidth=1.5,
            )
        if _all_zero(table, term):
            ax.text(0.5, 0.6, "0 at every epoch", transform=ax.transAxes, ha="center")
        ax.set_title(TERMS.get(term, term.replace("_", " ")), fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    return finish_figure(figure, axes, len(terms), title, path)


def _all_zero(table: pd.DataFrame, term: str) -> bool:
    columns = [c for c in (metric_column(table, term, split) for split in SPLITS) if c is not None]
    values = table[columns].to_numpy(dtype=float)
    values = values[~np.isnan(values)]
    return values.size > 0 and bool((values == 0).all())
