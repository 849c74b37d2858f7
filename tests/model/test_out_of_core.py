"""Models trained and queried on data that stay on disk: a backed h5ad and a zarr store."""

from __future__ import annotations

import anndata
import h5py
import numpy as np
import pytest
import zarr

import cellvi
from cellvi.model import SCANVI, SCVI, write_in_chunks

from ._model_helpers import TRAIN_KW

# Two epochs of 3 minibatches; blocks of one cell serve the in-memory loader's order.
FIT_KW = {**TRAIN_KW, "max_epochs": 2, "batch_size": 128}
SAME_ORDER = {"streaming": {"block_size": 1, "buffer_cells": 256}}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """synthetic_iid's cells in memory (CSR), backed from an h5ad file, and from zarr."""
    root = tmp_path_factory.mktemp("out_of_core")
    adata = cellvi.data.synthetic_iid(sparse_format="csr_matrix", seed=0)
    adata.write_h5ad(root / "data.h5ad")
    adata.write_zarr(root / "data.zarr")
    group = zarr.open(root / "data.zarr", mode="r")
    lazy = anndata.AnnData(
        X=anndata.io.sparse_dataset(group["X"]), obs=adata.obs.copy(), var=adata.var.copy()
    )
    return {
        "memory": adata,
        "backed": anndata.read_h5ad(root / "data.h5ad", backed="r"),
        "zarr": lazy,
        "root": root,
    }


def _fit(adata, **train_kw) -> SCVI:
    cellvi.settings.seed = 0
    SCVI.setup_anndata(adata, batch_key="batch")
    model = SCVI(adata, n_latent=5)
    model.train(**FIT_KW, **train_kw)
    return model


@pytest.fixture(scope="module")
def in_memory_model(stores):
    # The host loader: the in-memory path whose order blocks of one cell replay.
    return _fit(stores["memory"], device_resident=False)


@pytest.mark.parametrize("store", ["backed", "zarr"])
def test_blocks_of_one_cell_train_as_in_memory(stores, in_memory_model, store):
    model = _fit(stores[store], datasplitter_kwargs=SAME_ORDER)
    assert not isinstance(stores[store].X, np.ndarray)  # never loaded into memory
    np.testing.assert_allclose(
        model.history["elbo_train"].to_numpy(),
        in_memory_model.history["elbo_train"].to_numpy(),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        model.get_latent_representation(),
        in_memory_model.get_latent_representation(),
        rtol=1e-4,
        atol=1e-5,
    )


def test_block_shuffling_trains_on_the_same_cells_in_another_order(stores, in_memory_model):
    blocks = {"streaming": {"block_size": 16, "buffer_cells": 128}}
    model = _fit(stores["backed"], datasplitter_kwargs=blocks)
    np.testing.assert_array_equal(model.train_indices, in_memory_model.train_indices)
    ours = model.history["elbo_train"].to_numpy()
    theirs = in_memory_model.history["elbo_train"].to_numpy()
    assert not np.allclose(ours, theirs, rtol=1e-6)  # another order of the minibatches
    # ... whose effect is that of another shuffle: the epochs' ELBO agree within 1%.
    np.testing.assert_allclose(ours, theirs, rtol=1e-2)


@pytest.mark.parametrize("store", ["backed", "zarr"])
def test_queries_stream_from_the_file_to_the_in_memory_results(stores, in_memory_model, store):
    model = in_memory_model
    np.testing.assert_allclose(
        model.get_latent_representation(stores[store], batch_size=50),
        model.get_latent_representation(stores["memory"]),
        rtol=1e-5,
        atol=1e-6,
    )
    cellvi.settings.seed = 0
    ours = model.get_normalized_expression(stores[store], indices=np.arange(20, 90))
    cellvi.settings.seed = 0
    theirs = model.get_normalized_expression(stores["memory"], indices=np.arange(20, 90))
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=1e-5)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_query_results_are_written_to_disk_in_chunks(stores, in_memory_model, suffix):
    model = in_memory_model
    path = stores["root"] / f"latent{suffix}"
    written = write_in_chunks(
        model.get_latent_representation, path, adata=stores["backed"], chunk_size=150
    )
    expected = model.get_latent_representation(stores["memory"])
    np.testing.assert_allclose(written[:], expected, rtol=1e-5, atol=1e-6)
    if suffix == ".h5":
        written.file.close()
        with h5py.File(path) as file:
            np.testing.assert_allclose(file["X"][:], expected, rtol=1e-5, atol=1e-6)


def test_expression_is_written_into_a_given_array(stores, in_memory_model):
    written = {}
    for store in ("zarr", "memory"):
        written[store] = np.zeros((60, stores["memory"].n_vars), dtype=np.float32)
        cellvi.settings.seed = 0  # the same sampling noise, chunk by chunk
        write_in_chunks(
            in_memory_model.get_normalized_expression,
            written[store],
            adata=stores[store],
            indices=np.arange(100, 160),
            chunk_size=25,
        )
    assert written["zarr"].any()
    np.testing.assert_allclose(written["zarr"], written["memory"], rtol=1e-5)


def test_write_in_chunks_refuses_a_bad_chunk_size(in_memory_model, tmp_path):
    with pytest.raises(ValueError, match="chunk_size"):
        write_in_chunks(in_memory_model.get_latent_representation, tmp_path / "x.h5", chunk_size=0)


def test_a_zarr_store_cannot_be_held_on_the_device(stores):
    SCVI.setup_anndata(stores["zarr"], batch_key="batch")
    model = SCVI(stores["zarr"])
    with pytest.raises(ValueError, match="cannot hold a backed AnnData"):
        model.train(max_epochs=1, device_resident=True, **TRAIN_KW)


@pytest.mark.parametrize("store", ["backed", "zarr"])
def test_scanvi_trains_and_predicts_on_data_on_disk(stores, store):
    # Labels with an unlabeled category live in obs: the counts stay in the file.
    adata = stores[store]
    labels = adata.obs["labels"].astype(str).to_numpy()
    labels[::2] = "unknown"
    adata.obs["semi_labels"] = labels
    SCANVI.setup_anndata(
        adata, labels_key="semi_labels", unlabeled_category="unknown", batch_key="batch"
    )
    model = SCANVI(adata, n_latent=5)
    model.train(max_epochs=2, batch_size=128, enable_progress_bar=False)
    assert not isinstance(adata.X, np.ndarray)
    predictions = model.predict()
    assert predictions.shape == (adata.n_obs,)
    assert set(predictions) <= set(labels) - {"unknown"}
