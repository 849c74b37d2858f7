"""The training report of ``cellvi fit``: one HTML page with the training curves and the latent
space, and the same pictures as PNG files."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from cellvi._version import __version__
from cellvi.plotting import history_table
from cellvi.plotting._figures import INSTALL_HINT
from cellvi.plotting._history import SPLITS, history_terms, metric_column

logger = logging.getLogger("cellvi")

REPORT_HTML, HISTORY_PNG, EMBEDDING_PNG = "report.html", "history.png", "embedding.png"
REPORT_FILES = (REPORT_HTML, HISTORY_PNG, EMBEDDING_PNG)
_SPLIT_NAMES = {"train": "training", "validation": "validation"}


def write_training_report(
    model: Any,
    adata: AnnData | None,
    directory: str | Path,
    latent: np.ndarray | None = None,
    embedding: str = "auto",
    seconds: float | None = None,
    color: str | list[str] | None = None,
) -> Path:
    """Write ``report.html`` (and ``history.png``, ``embedding.png``) for a trained model.

    The page is self-contained (its pictures are inside it): the model and its data, how it
    was trained and the last epoch's metrics, the ELBO and its terms per epoch
    (``model.plot_history``), and the cells' latent space coloured by the registered batch and
    labels (``model.plot_latent``; UMAP when umap-learn or scanpy is installed, PCA
    otherwise). Without matplotlib (``pip install 'cellvi[plot]'``) the page has the facts
    only, and says so.

    Parameters
    ----------
    model
        A trained model.
    adata
        The data to show the latent space of (default the model's training data).
    directory
        Folder to write into (created if needed).
    latent
        ``adata``'s latent representation, if already computed.
    embedding
        ``"auto"``, ``"umap"`` or ``"pca"``.
    seconds
        How long training took, to report it.
    color
        obs columns to colour the latent space by; default the registered batch and labels.

    Returns
    -------
    The path of ``report.html``.
    """
    from cellvi.plotting import write_html_report

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    adata = model.adata if adata is None else adata
    table = history_table(model.history or {})
    figures: dict[str, Any] = {}
    notes = []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        notes.append(f"No pictures: matplotlib is not installed ({INSTALL_HINT}).")
        warnings.warn(
            f"The training report has no pictures: matplotlib is not installed ({INSTALL_HINT}).",
            UserWarning,
            stacklevel=2,
        )
    else:
        if history_terms(table):
            figures["Training curves"] = model.plot_history(path=directory / HISTORY_PNG)
        figure = model.plot_latent(
            adata, color=color, latent=latent, method=embedding, path=directory / EMBEDDING_PNG
        )
        figures["Latent space"] = figure
    facts = _facts(model, adata, table, seconds)
    path = write_html_report(
        directory / REPORT_HTML,
        f"cellvi {type(model).__name__} training report",
        facts,
        figures,
        tables={"Last epoch": _last_epoch(table)} if len(table) else None,
        notes=notes,
    )
    logger.info("Wrote the training report %s", path)
    return path


def _facts(model: Any, adata: AnnData, table: Any, seconds: float | None) -> list[tuple[str, Any]]:
    stats = model.summary_stats
    setup = model.adata_manager.registry.get("setup_args", {})
    facts: list[tuple[str, Any]] = [
        ("model", type(model).__name__),
        ("cellvi", __version__),
        ("cells × genes", f"{adata.n_obs:,} × {adata.n_vars:,}"),
        ("batches", stats.get("n_batch", 1)),
        ("labels", stats.get("n_labels", 1)),
        (
            "setup",
            ", ".join(f"{key}={value!r}" for key, value in setup.items() if value is not None)
            or "defaults",
        ),
        (
            "model parameters",
            ", ".join(f"{key}={value!r}" for key, value in _init_params(model).items())
            or "defaults",
        ),
        ("epochs", len(table)),
        (
            "cells (train / validation / test)",
            " / ".join(
                str(0 if indices is None else len(indices))
                for indices in (model.train_indices, model.validation_indices, model.test_indices)
            ),
        ),
        ("device", str(model.device)),
    ]
    if seconds is not None:
        facts.append(("training time", f"{seconds:.1f} s"))
    return facts


def _last_epoch(table: pd.DataFrame) -> pd.DataFrame:
    """Each metric's last value, one row per metric, a column per split."""
    rows = {}
    for term in [*history_terms(table, every=True), "loss"]:
        values = {}
        for split in SPLITS:
            column = metric_column(table, term, split)
            if column is not None and table[column].notna().any():
                values[_SPLIT_NAMES[split]] = float(table[column].dropna().iloc[-1])
        if values:
            rows[term] = values
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "metric"
    return frame


def _init_params(model: Any) -> dict[str, Any]:
    params = dict(model.init_params_.get("non_kwargs", {}))
    params.update(model.init_params_.get("kwargs", {}).get("model_kwargs", {}) or {})
    return {key: value for key, value in params.items() if not isinstance(value, dict | list)}
