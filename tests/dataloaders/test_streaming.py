"""The out-of-core path: block order, read-ahead thread, and ``StreamingLoader`` on files."""

from __future__ import annotations

import threading
import time

import anndata
import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DistributedSampler

import cellvi
from cellvi.data import REGISTRY_KEYS, AnnTorchDataset
from cellvi.dataloaders import AnnDataLoader, StreamingConfig, StreamingLoader
from cellvi.dataloaders._block_order import BlockOrder
from cellvi.dataloaders._generator import order_generator
from cellvi.dataloaders._prefetch import prefetched
from cellvi.dataloaders._sampler import BatchIndexSampler

from .conftest import build_adata, expected_arrays, register


@pytest.fixture
def on_disk(tmp_path, request):
    """The same registered data in memory, backed from an h5ad file, and from a zarr store."""
    adata = build_adata(n_cells=300, x_format="csr")
    adata.write_h5ad(tmp_path / "data.h5ad")
    adata.write_zarr(tmp_path / "data.zarr")
    backed = anndata.read_h5ad(tmp_path / "data.h5ad", backed="r")
    store = zarr.open(tmp_path / "data.zarr", mode="r")
    lazy = anndata.AnnData(
        X=anndata.io.sparse_dataset(store["X"]),
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        obsm={"protein_expression": adata.obsm["protein_expression"]},
        uns={"protein_names": adata.uns["protein_names"]},
    )
    alive = [adata, backed, lazy]
    yield {"memory": register(adata), "backed": register(backed), "zarr": register(lazy)}
    del alive


# Block order ---------------------------------------------------------------------------------


def test_blocks_of_one_cell_give_the_in_memory_order(restore_seed):
    cellvi.settings.seed = 11
    cells = np.random.default_rng(0).permutation(1000)
    order = BlockOrder(cells, 1, 128, shuffle=True, generator=order_generator())
    in_memory = BatchIndexSampler(cells, 100, shuffle=True, generator=order_generator())
    for _ in range(2):  # two epochs
        served = order.epoch_cells()
        for batch, start in zip(in_memory, range(0, 1000, 100), strict=True):
            np.testing.assert_array_equal(np.sort(served[start : start + 100]), batch)


def test_block_shuffling_reads_whole_blocks_and_mixes_them_within_windows(restore_seed):
    cellvi.settings.seed = 11
    cells = np.arange(0, 2000, 2)  # every other cell of the file
    order = BlockOrder(cells, 50, 200, shuffle=True, generator=order_generator())
    windows = list(order)
    served = np.concatenate(windows)
    np.testing.assert_array_equal(np.sort(served), cells)
    blocks_per_window = [np.unique(np.searchsorted(cells, w) // 50) for w in windows]
    assert all(blocks.size == 4 for blocks in blocks_per_window)  # 200 cells: 4 whole blocks
    assert not all(np.all(np.diff(w) > 0) for w in windows)  # shuffled within windows
    assert not np.array_equal(np.sort(windows[0]), cells[:200])  # blocks permuted
    assert not np.array_equal(served, np.concatenate(list(order)))  # a new order each epoch


def test_unshuffled_cells_come_as_given():
    cells = np.array([5, 3, 9, 1, 7])
    np.testing.assert_array_equal(BlockOrder(cells, 2, 2, shuffle=False).epoch_cells(), cells)


@pytest.mark.parametrize("n_cells", [100, 101])
def test_distributed_blocks_of_one_cell_follow_the_distributed_sampler(n_cells):
    cells = np.arange(n_cells) * 3
    for epoch in (0, 1):
        for rank in (0, 1):
            order = BlockOrder(cells, 1, 16, True, rank=rank, world=2, seed=7)
            order.set_epoch(epoch)
            sampler = DistributedSampler(range(n_cells), 2, rank, shuffle=True, seed=7)
            sampler.set_epoch(epoch)
            np.testing.assert_array_equal(order.epoch_cells(), cells[list(sampler)])


def test_distributed_ranks_read_their_own_blocks_and_as_many_cells():
    cells = np.arange(1000)
    orders = [BlockOrder(cells, 100, 200, True, rank=r, world=2, seed=0) for r in (0, 1)]
    mine = [order.epoch_cells() for order in orders]
    assert mine[0].size == mine[1].size == 500
    assert not set(mine[0] // 100) & set(mine[1] // 100)
    np.testing.assert_array_equal(np.sort(np.concatenate(mine)), cells)


def test_bad_block_order_arguments_are_refused():
    with pytest.raises(ValueError, match="block_size"):
        BlockOrder(np.arange(4), 0, 2, True)
    with pytest.raises(ValueError, match="rank"):
        BlockOrder(np.arange(4), 1, 2, True, rank=2, world=2)
    with pytest.raises(ValueError, match="prefetch"):
        StreamingConfig(prefetch=-1)
    with pytest.raises(TypeError, match="Unknown streaming options"):
        StreamingConfig.of({"block": 3})


# Read-ahead thread ---------------------------------------------------------------------------


def test_prefetch_keeps_the_order_and_stays_a_bounded_number_of_items_ahead():
    produced = []

    def items():
        for item in range(20):
            produced.append(item)
            yield item

    ahead = []
    for item in prefetched(items(), depth=2):
        time.sleep(0.005)  # a slow consumer: the producer runs as far ahead as allowed
        ahead.append(len(produced) - item - 1)
        assert item == len(ahead) - 1
    assert max(ahead) <= 3  # two waiting and one being produced
    assert max(ahead) >= 1  # it did read ahead


def test_an_error_while_reading_is_raised_in_the_consumer():
    def items():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetched(items(), depth=2))


def test_leaving_the_loop_early_stops_the_thread():
    before = threading.active_count()
    for item in prefetched(iter(range(1000)), depth=1):
        if item == 3:
            break
    assert threading.active_count() == before


# StreamingLoader -----------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["backed", "zarr"])
def test_files_stream_every_field_in_the_order_given(on_disk, store):
    indices = np.r_[250:300, 0:40, 120:130]
    loader = StreamingLoader(
        on_disk[store], indices=indices, batch_size=32, streaming={"buffer_cells": 64}
    )
    expected = expected_arrays(on_disk["memory"].adata)
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    for key, values in expected.items():
        served = np.concatenate([batch[key].numpy() for batch in batches])
        np.testing.assert_allclose(served, values[indices], rtol=1e-6, err_msg=key)


@pytest.mark.parametrize("store", ["backed", "zarr"])
def test_blocks_of_one_cell_stream_the_in_memory_minibatches(on_disk, store, restore_seed):
    cells = np.random.default_rng(3).permutation(300)[:250]
    cellvi.settings.seed = 5
    in_memory = list(AnnDataLoader(on_disk["memory"], cells, batch_size=40, shuffle=True))
    streamed = list(
        StreamingLoader(
            on_disk[store],
            cells,
            batch_size=40,
            shuffle=True,
            streaming=StreamingConfig(block_size=1, buffer_cells=80),
        )
    )
    assert len(streamed) == len(in_memory) == 7
    for ours, theirs in zip(streamed, in_memory, strict=True):
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key])


def test_drop_last_and_sparse_tensors(on_disk):
    loader = StreamingLoader(
        on_disk["backed"], batch_size=64, shuffle=True, drop_last=True, load_sparse_tensor=True
    )
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    x = batches[0][REGISTRY_KEYS.X_KEY]
    assert x.layout == torch.sparse_csr and x.shape == (64, 7)


def test_reads_of_scattered_rows_from_a_file_are_right(on_disk):
    rows = np.array([299, 0, 1, 2, 40, 41, 200, 2, 150])
    backed = AnnTorchDataset(on_disk["backed"])[rows]
    memory = AnnTorchDataset(on_disk["memory"])[rows]
    for key in memory:
        np.testing.assert_array_equal(backed[key], memory[key], err_msg=key)


def test_a_distributed_loader_needs_a_process_group(on_disk):
    with pytest.raises(RuntimeError, match="process group"):
        StreamingLoader(on_disk["backed"], distributed=True)
