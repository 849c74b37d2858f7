"""``plot_embedding``: the latent space in two dimensions, coloured by obs columns."""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from cellvi.plotting._figures import finish_figure, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

UMAP_HINT = "pip install 'cellvi[umap]' (umap-learn), or scanpy"
# UMAP's neighbour graph (15 neighbours) needs more cells than that to mean anything.
_MIN_CELLS_FOR_UMAP = 30
# Up to this many categories get a colour and a legend entry each.
_MAX_LEGEND = 30
# A numeric column with more distinct values than this is drawn as a colour scale.
_MAX_NUMERIC_CATEGORIES = 20


def embedding_coordinates(
    latent: np.ndarray,
    method: Literal["auto", "umap", "pca"] = "auto",
    seed: int = 0,
) -> tuple[np.ndarray, str]:
    """Two-dimensional coordinates of the cells' latent representation.

    Parameters
    ----------
    latent
        ``(n_cells, n_latent)`` matrix (``model.get_latent_representation()``).
    method
        ``"umap"``: UMAP, with umap-learn or else scanpy (an error when neither is
        installed); ``"pca"``: the first two principal components; ``"auto"``: UMAP when one
        of them is installed and there are enough cells (30), PCA otherwise.
    seed
        Seed of UMAP's layout (PCA is deterministic).

    Returns
    -------
    The ``(n_cells, 2)`` coordinates and the name of the method used (``"UMAP"`` or
    ``"PCA"``).
    """
    latent = np.asarray(latent, dtype=float)
    if latent.ndim != 2 or latent.shape[0] < 2:
        raise ValueError(
            f"latent must be a (cells, dimensions) matrix of at least 2 cells; got shape "
            f"{latent.shape}."
        )
    if not np.isfinite(latent).all():
        raise ValueError("latent holds NaN or infinite values.")
    if method not in ("auto", "umap", "pca"):
        raise ValueError(f"method must be 'auto', 'umap' or 'pca', got {method!r}.")
    if method == "umap" or (method == "auto" and latent.shape[0] >= _MIN_CELLS_FOR_UMAP):
        coordinates = _umap(latent, seed)
        if coordinates is not None:
            return coordinates, "UMAP"
        if method == "umap":
            raise ModuleNotFoundError(
                f"UMAP coordinates need umap-learn or scanpy, neither is installed: {UMAP_HINT}"
                "; or use method='pca'."
            )
    return _pca(latent), "PCA"


def _umap(latent: np.ndarray, seed: int) -> np.ndarray | None:
    """UMAP coordinates from umap-learn, else scanpy; None when neither is installed."""
    with warnings.catch_warnings():
        # Both explain at length that a seeded UMAP runs on one thread, and numba warns of
        # its own deprecations: nothing a user of this plot can act on.
        warnings.filterwarnings("ignore", module=r"(umap|numba|scanpy|pynndescent)(\.|$)")
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        umap = _optional("umap")
        if umap is not None and hasattr(umap, "UMAP"):
            reducer = umap.UMAP(n_components=2, random_state=seed)
            return np.asarray(reducer.fit_transform(latent), dtype=float)
        scanpy = _optional("scanpy")
        if scanpy is not None:
            from anndata import AnnData

            adata = AnnData(obsm={"X_latent": latent}, shape=(latent.shape[0], 0))
            scanpy.pp.neighbors(adata, use_rep="X_latent", random_state=seed)
            scanpy.tl.umap(adata, random_state=seed)
            return np.asarray(adata.obsm["X_umap"], dtype=float)
    return None


def umap_available() -> bool:
    """Whether UMAP coordinates can be computed (umap-learn or scanpy is installed)."""
    umap = _optional("umap")
    return (umap is not None and hasattr(umap, "UMAP")) or _optional("scanpy") is not None


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _pca(latent: np.ndarray) -> np.ndarray:
    """The first two principal components (signs fixed: each axis' largest loading > 0)."""
    centred = latent - latent.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1, signs)[:, None]
    coordinates = centred @ components.T
    if coordinates.shape[1] < 2:  # a one-dimensional latent space
        coordinates = np.column_stack([coordinates, np.zeros(len(coordinates))])
    return coordinates


def plot_embedding(
    latent: np.ndarray | None = None,
    groups: Mapping[str, Sequence[Any]] | pd.DataFrame | None = None,
    method: Literal["auto", "umap", "pca"] = "auto",
    seed: int = 0,
    coordinates: np.ndarray | None = None,
    method_name: str | None = None,
    path: str | Path | None = None,
    title: str | None = None,
    point_size: float | None = None,
    panel_size: tuple[float, float] = (5.5, 4.5),
    dpi: float = 100,
) -> Figure:
    """Plot the cells in two dimensions, one panel per grouping (batch, labels, ...).

    Parameters
    ----------
    latent
        ``(n_cells, n_latent)`` latent representation, reduced to two dimensions with
        :func:`embedding_coordinates`; or give ``coordinates`` instead.
    groups
        Columns to colour by, one panel each: a mapping of names to one value per cell, or
        a DataFrame (e.g. ``adata.obs[["batch", "cell_type"]]``). Categories get a colour
        each (missing values are grey); numeric columns with many values get a colour scale.
        None: one panel, one colour.
    method, seed
        How ``latent`` is reduced (see :func:`embedding_coordinates`).
    coordinates
        Precomputed ``(n_cells, 2)`` coordinates (``latent`` and ``method`` are then unused).
    method_name
        Axis name of precomputed coordinates (e.g. ``"UMAP"``).
    path
        Also write the figure there (PNG unless the suffix says otherwise).
    title
        Title over the panels.
    point_size
        Marker area; default shrinks with the number of cells.
    panel_size
        Width and height of one panel, in inches (legends sit inside it).
    dpi
        Resolution: a PNG is ``panel_size * (columns, rows) * dpi`` pixels.

    Returns
    -------
    The matplotlib ``Figure``.
    """
    if coordinates is None:
        if latent is None:
            raise ValueError("Give the latent representation (or precomputed coordinates).")
        coordinates, method_name = embedding_coordinates(latent, method=method, seed=seed)
    coordinates = np.asarray(coordinates, dtype=float)
    if coordinates.ndim != 2 or coordinates.shape[1] != 2:
        raise ValueError(f"coordinates must be (cells, 2); got shape {coordinates.shape}.")
    n_cells = coordinates.shape[0]
    columns = _group_columns(groups, n_cells)
    n_panels = max(len(columns), 1)
    n_columns = min(n_panels, 2)
    n_rows = math.ceil(n_panels / n_columns)
    figure = new_figure((panel_size[0] * n_columns, panel_size[1] * n_rows), dpi)
    axes = figure.subplots(n_rows, n_columns, squeeze=False).ravel()
    size = point_size if point_size is not None else float(np.clip(6_000 / n_cells, 0.5, 30))
    # Draw the cells in a random order, so that no group is hidden under another.
    order = np.random.default_rng(seed).permutation(n_cells)
    name = method_name or "component"
    panels = list(columns.items()) or [(None, None)]
    for ax, (column, values) in zip(axes, panels, strict=False):
        if values is None:
            ax.scatter(*coordinates[order].T, s=size, color="#4c72b0", linewidths=0)
        elif _is_continuous(values):
            points = ax.scatter(
                *coordinates[order].T,
                s=size,
                c=np.asarray(values, dtype=float)[order],
                cmap="viridis",
                linewidths=0,
            )
            figure.colorbar(points, ax=ax, shrink=0.8)
        else:
            _scatter_categories(ax, coordinates, values, order, size)
        ax.set_title(column or f"{n_cells:,} cells", fontsize=10)
        ax.set_xlabel(f"{name} 1")
        ax.set_ylabel(f"{name} 2")
        ax.set_xticks([])
        ax.set_yticks([])
    return finish_figure(figure, axes, len(panels), title, path)


def _group_columns(
    groups: Mapping[str, Sequence[Any]] | pd.DataFrame | None, n_cells: int
) -> dict[str, pd.Series]:
    if groups is None:
        return {}
    items = groups.items()
    columns = {}
    for name, values in items:
        series = pd.Series(np.asarray(values) if not isinstance(values, pd.Series) else values)
        if len(series) != n_cells:
            raise ValueError(
                f"groups[{name!r}] has {len(series)} values for {n_cells} cells; give one per "
                "cell."
            )
        columns[str(name)] = series.reset_index(drop=True)
    return columns


def _is_continuous(values: pd.Series) -> bool:
    return (
        pd.api.types.is_numeric_dtype(values)
        and not pd.api.types.is_bool_dtype(values)
        and not isinstance(values.dtype, pd.CategoricalDtype)
        and values.nunique() > _MAX_NUMERIC_CATEGORIES
    )


def _scatter_categories(
    ax: Any, coordinates: np.ndarray, values: pd.Series, order: np.ndarray, size: float
) -> None:
    """One colour per category, a legend beside the panel (inside it when there are many)."""
    from matplotlib import colormaps

    missing = values.isna().to_numpy()
    labels = values.astype(str).where(~values.isna(), "NA")
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = [str(c) for c in values.cat.categories if str(c) in set(labels)]
    else:
        categories = sorted(set(labels[~missing]), key=_natural_key)
    n = len(categories)
    if n <= 10:
        palette = colormaps["tab10"].colors
    elif n <= 20:
        palette = colormaps["tab20"].colors
    else:
        palette = colormaps["turbo"](np.linspace(0.05, 0.95, n))
    colors = {category: palette[i % len(palette)] for i, category in enumerate(categories)}
    colors["NA"] = (0.75, 0.75, 0.75)
    point_colors = np.array([colors[label] for label in labels.to_numpy()[order]])
    ax.scatter(*coordinates[order].T, s=size, c=point_colors, linewidths=0)
    if n > _MAX_LEGEND:
        ax.set_title(f"({n} categories)", fontsize=8, loc="right")
        return
    shown = categories + (["NA"] if missing.any() else [])
    handles = [
        ax.scatter([], [], s=25, color=colors[category], label=category) for category in shown
    ]
    ax.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=7,
        frameon=False,
        markerscale=1.0,
        ncols=1 if len(shown) <= 15 else 2,
    )


def _natural_key(text: str) -> tuple[Any, ...]:
    """Sort ``"type_2"`` before ``"type_10"``."""
    import re

    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))
