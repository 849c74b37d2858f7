"""The pictures render: PNGs written, non-empty, of the size asked for."""

from __future__ import annotations

import base64
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cellvi
from cellvi import plotting
from cellvi.plotting import _embedding

pytest.importorskip("matplotlib")


def png_size(path_or_bytes: Path | bytes) -> tuple[int, int]:
    """Width and height of a PNG, read from its header (and the file checked to be one)."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _drawn_pixels(path: Path) -> float:
    """Fraction of the picture's pixels that are not plain white."""
    import matplotlib.image

    pixels = matplotlib.image.imread(path)[..., :3]
    return float((pixels < 0.98).any(axis=-1).mean())


@pytest.fixture(scope="module")
def trained() -> cellvi.model.SCVI:
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid(seed=0)
    cellvi.model.SCVI.setup_anndata(adata, batch_key="batch", labels_key="labels")
    model = cellvi.model.SCVI(adata, n_latent=4)
    model.train(max_epochs=4, check_val_every_n_epoch=2, enable_progress_bar=False)
    return model


def test_plot_history_writes_a_png_of_the_size_asked_for(trained, tmp_path) -> None:
    path = tmp_path / "history.png"
    figure = trained.plot_history(path=path, panel_size=(4, 3), dpi=50)
    # The ELBO and its three terms: two columns, two rows of 4 x 3 inches at 50 dpi.
    assert png_size(path) == (2 * 4 * 50, 2 * 3 * 50)
    assert path.stat().st_size > 5_000
    assert _drawn_pixels(path) > 0.02
    titles = [ax.get_title() for ax in figure.axes if ax.get_visible()]
    assert titles == [
        "negative ELBO per cell (lower is better)",
        "reconstruction loss per cell",
        "local KL divergence per cell",
        "global KL divergence",
    ]
    elbo = figure.axes[0]
    lines = {line.get_label(): line for line in elbo.get_lines()}
    assert set(lines) == {"training", "validation"}
    # Every epoch for training, the validated ones (2 and 4) for validation, from 1.
    assert list(lines["training"].get_xdata()) == [1, 2, 3, 4]
    assert list(lines["validation"].get_xdata()) == [2, 4]
    np.testing.assert_allclose(
        lines["training"].get_ydata(), trained.history["elbo_train"].iloc[:, 0]
    )


def test_plot_history_draws_the_terms_asked_for_and_refuses_unknown_ones(trained) -> None:
    figure = plotting.plot_history(trained.history, terms=["kl_local"], dpi=40)
    assert [ax.get_title() for ax in figure.axes] == ["local KL divergence per cell"]
    with pytest.raises(ValueError, match=r"No such terms in the history: \['elbo_typo'\]"):
        plotting.plot_history(trained.history, terms=["elbo_typo"])
    with pytest.raises(ValueError, match="no metric logged per epoch"):
        plotting.plot_history({})


def test_an_untrained_model_has_no_history_to_plot() -> None:
    adata = cellvi.data.synthetic_iid(seed=0)
    cellvi.model.SCVI.setup_anndata(adata)
    with pytest.raises(RuntimeError, match=r"no training history: call model.train\(\) first"):
        cellvi.model.SCVI(adata).plot_history()


def test_the_history_table_aligns_sparse_validation_epochs(trained) -> None:
    table = plotting.history_table(trained.history)
    assert table.index.name == "epoch"
    assert list(table.index) == [0, 1, 2, 3]
    assert table["elbo_validation"].isna().tolist() == [True, False, True, False]


def test_plot_latent_colours_by_the_registered_batch_and_labels(trained, tmp_path) -> None:
    path = tmp_path / "latent.png"
    figure = trained.plot_latent(method="pca", path=path, panel_size=(5, 4), dpi=40)
    assert png_size(path) == (2 * 5 * 40, 4 * 40)
    assert _drawn_pixels(path) > 0.02
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["batch", "labels"]
    assert axes[0].get_xlabel() == "PCA 1"
    legend = [text.get_text() for text in axes[1].get_legend().get_texts()]
    assert legend == ["label_0", "label_1", "label_2"]


def test_plot_latent_takes_other_columns_and_names_a_missing_one(trained) -> None:
    trained.adata.obs["depth"] = np.asarray(trained.adata.X.sum(axis=1)).ravel()
    figure = trained.plot_latent(color="depth", method="pca", dpi=30)
    # A numeric column of many values gets a colour scale (a second axes: the colour bar).
    assert [ax.get_title() for ax in figure.axes][0] == "depth"
    assert len(figure.axes) == 2
    with pytest.raises(KeyError, match="No obs column 'nope' to colour by"):
        trained.plot_latent(color=["batch", "nope"])


def test_pca_is_the_fallback_without_umap(monkeypatch) -> None:
    monkeypatch.setattr(_embedding, "_optional", lambda module: None)
    latent = np.random.default_rng(0).normal(size=(200, 6)) * np.arange(1, 7)
    coordinates, method = plotting.embedding_coordinates(latent)
    assert method == "PCA"
    # scikit-learn's principal components, up to their signs.
    from sklearn.decomposition import PCA

    reference = PCA(n_components=2).fit_transform(latent)
    np.testing.assert_allclose(np.abs(coordinates), np.abs(reference), atol=1e-8)
    assert abs(np.corrcoef(coordinates[:, 0], latent[:, 5])[0, 1]) > 0.9
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'cellvi\[umap\]'"):
        plotting.embedding_coordinates(latent, method="umap")


def test_umap_is_used_when_installed() -> None:
    pytest.importorskip("umap")
    latent = np.random.default_rng(0).normal(size=(120, 5))
    coordinates, method = plotting.embedding_coordinates(latent, method="auto")
    assert method == "UMAP" and coordinates.shape == (120, 2)


def test_embedding_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="method must be 'auto', 'umap' or 'pca'"):
        plotting.embedding_coordinates(np.zeros((5, 2)), method="tsne")
    with pytest.raises(ValueError, match="NaN"):
        plotting.embedding_coordinates(np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="has 3 values for 5 cells"):
        plotting.plot_embedding(np.zeros((5, 2)), {"batch": ["a", "b", "c"]}, method="pca")


def test_many_categories_and_missing_values_are_drawn(tmp_path) -> None:
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(300, 3))
    groups = pd.DataFrame(
        {
            "many": [f"c{i}" for i in rng.integers(0, 40, 300)],
            "with_na": pd.Categorical(rng.choice(["a", "b", None], 300)),
        }
    )
    path = tmp_path / "many.png"
    figure = plotting.plot_embedding(latent, groups, method="pca", path=path, dpi=30)
    assert png_size(path) == (2 * 5.5 * 30, 4.5 * 30)
    legend = [text.get_text() for text in figure.axes[1].get_legend().get_texts()]
    assert legend == ["a", "b", "NA"]
    assert figure.axes[0].get_legend() is None  # 40 categories: no legend


def test_the_html_report_is_one_self_contained_file(trained, tmp_path) -> None:
    figure = trained.plot_history(dpi=30)
    path = plotting.write_html_report(
        tmp_path / "report.html",
        "A <title>",
        {"cells": 400, "model": "SCVI & co"},
        {"History": figure, "Bytes": plotting.figure_png(figure)},
        tables={"Last": plotting.history_table(trained.history).tail(2)},
        notes=["a note"],
    )
    text = path.read_text()
    assert "<title>A &lt;title&gt;</title>" in text and "SCVI &amp; co" in text
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)">', text)
    assert len(images) == 2
    assert png_size(base64.b64decode(images[0])) == (2 * 4.5 * 30, 2 * 3.2 * 30)
    # Nothing is fetched from elsewhere: no script, stylesheet or image outside the page.
    assert not re.search(r"<script|<link|src=\"(?!data:)", text)


def test_plots_without_matplotlib_say_how_to_install_it(monkeypatch, trained) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'cellvi\[plot\]'"):
        trained.plot_history()
