"""matplotlib, imported when a picture is drawn (it is an optional dependency)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INSTALL_HINT = "pip install 'cellvi[plot]'"


def new_figure(figsize: tuple[float, float], dpi: float) -> Figure:
    """A figure of its own (not registered with ``pyplot``), laid out by matplotlib.

    Its PNG is ``figsize * dpi`` pixels (see :func:`save_figure`).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ModuleNotFoundError(
            f"cellvi's plots need matplotlib, which is not installed: {INSTALL_HINT}."
        ) from error
    return Figure(figsize=figsize, dpi=dpi, layout="constrained")


def save_figure(figure: Figure, path: str | Path | None, **savefig_kwargs: Any) -> None:
    """Write ``figure`` to ``path`` (the format from its suffix, PNG by default), if given.

    The figure keeps its size: ``figsize * dpi`` pixels for a PNG.
    """
    if path is None:
        return
    path = Path(path)
    kwargs = {"dpi": figure.dpi, **savefig_kwargs}
    if not path.suffix:
        kwargs.setdefault("format", "png")
    figure.savefig(path, **kwargs)


def figure_png(figure: Figure) -> bytes:
    """The PNG bytes of ``figure`` at its own size and resolution."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    return buffer.getvalue()


def finish_figure(
    figure: Figure, axes: Sequence[Any], n_panels: int, title: str | None, path: str | Path | None
) -> Figure:
    """Hide the axes past the first ``n_panels``, add ``title``, save to ``path`` if given."""
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    save_figure(figure, path)
    return figure
