"""Pictures of a fit: the training history and a 2-D embedding of the latent space.

These functions take plain tables and arrays (a model's ``history``, a latent matrix, obs
columns), so they depend on no other part of cellvi; the models' ``plot_history`` and
``plot_latent`` methods call them. They need matplotlib, an optional dependency
(``pip install 'cellvi[plot]'``), and draw on figures of their own (never through
``pyplot``'s global state), so they work without a display and leave the user's figures
alone. UMAP coordinates come from umap-learn or scanpy when one is installed
(``cellvi[umap]``); otherwise the embedding is the first two principal components.
"""

from cellvi.plotting._embedding import embedding_coordinates, plot_embedding
from cellvi.plotting._figures import figure_png
from cellvi.plotting._history import history_table, plot_history
from cellvi.plotting._report import write_html_report

__all__ = [
    "embedding_coordinates",
    "figure_png",
    "history_table",
    "plot_embedding",
    "plot_history",
    "write_html_report",
]
