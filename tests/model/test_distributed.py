"""Training on two CPU processes (gloo) through Lightning's ``strategy="ddp"``.

Each fit runs ``_distributed_fit.py`` as a script (Lightning starts rank 1 by running it
again), so the fits run apart from pytest's own process. They share one xdist group: two
ranks each already fill this machine's cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cellvi
from cellvi.model import SCVI
from cellvi.train import _distributed

SCRIPT = Path(__file__).with_name("_distributed_fit.py")
# A fit takes seconds; a hung run must fail the test, not the suite.
TIMEOUT_S = 240

pytestmark = pytest.mark.xdist_group("distributed")


def _fit(out: Path, mode: str) -> subprocess.CompletedProcess:
    out.mkdir()
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(out), mode],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The two-process fit and the one-process fit on the same epoch orders."""
    root = tmp_path_factory.mktemp("distributed")
    for mode in ("ddp", "ddp-backed", "scanvi-ddp", "single"):
        done = _fit(root / mode, mode)
        assert done.returncode == 0, done.stderr[-3000:]
    return {
        **{
            mode: [np.load(root / mode / f"rank{rank}.npz") for rank in (0, 1)]
            for mode in ("ddp", "ddp-backed", "scanvi-ddp")
        },
        "single": np.load(root / "single" / "rank0.npz"),
        "root": root,
    }


@pytest.mark.parametrize("run", ["ddp", "ddp-backed", "scanvi-ddp"])
def test_each_rank_trains_on_its_own_half_of_the_training_cells_every_epoch(runs, run):
    rank0, rank1 = runs[run]
    train_cells = np.sort(rank0["train_cells"])
    for epoch in ("epoch0", "epoch1"):
        assert rank0[epoch].size == rank1[epoch].size == train_cells.size // 2
        assert not set(rank0[epoch]) & set(rank1[epoch])
        np.testing.assert_array_equal(np.sort(np.r_[rank0[epoch], rank1[epoch]]), train_cells)
    # A new order, and a new share, each epoch.
    assert set(rank0["epoch0"]) != set(rank0["epoch1"])


def test_the_ranks_take_the_steps_of_one_process_reading_both_shares(runs):
    rank0, rank1 = runs["ddp"]
    single = runs["single"]
    for epoch in ("epoch0", "epoch1"):
        for step in range(3):
            both = set(rank0[epoch][64 * step : 64 * (step + 1)])
            both |= set(rank1[epoch][64 * step : 64 * (step + 1)])
            assert both == set(single[epoch][128 * step : 128 * (step + 1)])


@pytest.mark.parametrize("run", ["ddp", "ddp-backed", "scanvi-ddp"])
def test_both_ranks_end_with_identical_weights(runs, run):
    rank0, rank1 = runs[run]
    np.testing.assert_array_equal(rank0["weights"], rank1["weights"])


def test_streaming_ranks_read_the_shares_of_the_in_memory_ranks(runs):
    for in_memory, streamed in zip(runs["ddp"], runs["ddp-backed"], strict=True):
        for step in range(6):  # three minibatches in each of the two epochs
            epoch, start = f"epoch{step // 3}", 64 * (step % 3)
            ours, theirs = (run[epoch][start : start + 64] for run in (streamed, in_memory))
            np.testing.assert_array_equal(np.sort(ours), np.sort(theirs))


def test_epoch_metrics_are_summed_across_ranks(runs):
    rank0, rank1 = runs["ddp"]
    # Each rank saw other cells: equal metrics mean both logged the sums of all of them.
    np.testing.assert_array_equal(rank0["elbo_train"], rank1["elbo_train"])
    np.testing.assert_allclose(rank0["elbo_train"], runs["single"]["elbo_train"], rtol=5e-3)


def test_the_saved_model_loads_to_the_latent_of_the_one_process_fit(runs):
    loaded = SCVI.load(runs["root"] / "ddp" / "model", accelerator="cpu")
    latent = loaded.get_latent_representation()
    np.testing.assert_allclose(latent, runs["ddp"][0]["latent"], rtol=1e-5, atol=1e-6)
    single = runs["single"]["latent"]
    # The ranks draw the same sampling noise for their cells, one process draws its own for
    # each cell: the fits differ by that noise, not by their data.
    assert np.linalg.norm(latent - single) / np.linalg.norm(single) < 0.15
    assert np.corrcoef(latent.ravel(), single.ravel())[0, 1] > 0.99


def test_only_rank_zero_writes_the_model(tmp_path, monkeypatch):
    adata = cellvi.data.synthetic_iid(batch_size=20, n_genes=10)
    SCVI.setup_anndata(adata)
    model = SCVI(adata)
    monkeypatch.setattr(_distributed.rank_zero_only, "rank", 1, raising=False)
    model.save(tmp_path / "rank1")
    assert not (tmp_path / "rank1").exists()
    monkeypatch.setattr(_distributed.rank_zero_only, "rank", 0, raising=False)
    model.save(tmp_path / "rank0")
    assert (tmp_path / "rank0").is_dir()


def test_killing_one_rank_fails_the_run_with_a_clear_error(tmp_path):
    done = _fit(tmp_path / "kill", "kill")  # a hang raises TimeoutExpired
    assert done.returncode != 0
    assert "The distributed fit stopped: another of its 2 processes ended" in done.stderr
