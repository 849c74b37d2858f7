"""A fit of SCVI on two CPU processes (gloo), run as a script by ``test_distributed.py``.

Lightning's ``strategy="ddp"`` starts rank 1 by running this script again, so everything here
runs on both ranks. Each rank writes what the test checks to ``OUT/rank<r>.npz``: the
fingerprints of the cells it trained on per epoch, its final weights and its latent space;
``model.save`` is called on both, and only rank 0 may write.

Usage: ``python _distributed_fit.py OUT MODE`` with MODE ``ddp`` (two processes, 64 cells per
minibatch each), ``ddp-backed`` (the same from a backed h5ad file, streamed), ``single`` (one
process, 128 cells per minibatch, the same epoch orders), ``kill`` (``ddp`` whose rank 1 dies
during the first epoch) or ``scanvi-ddp`` (SCANVI, half of the cells labeled: minibatches of the
cells, each beside one of labeled cells).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anndata
import lightning.pytorch as pl
import numpy as np
import torch

import cellvi
from cellvi.dataloaders import AnnDataLoader, BatchDistributedSampler, DataSplitter
from cellvi.model import SCANVI, SCVI

N_GENES = 50
MAX_EPOCHS = 2
# Batch norm and dropout act per process, so they are off: two ranks of 64 cells then take
# the steps one process takes on the 128 cells of both.
MODEL_KW = {"n_latent": 4, "n_hidden": 16, "use_batch_norm": "none", "dropout_rate": 0.0}


def fingerprints(counts: np.ndarray) -> np.ndarray:
    """One number per cell that tells cells apart (their counts against fixed weights)."""
    weights = np.random.default_rng(1).random(N_GENES)
    return np.asarray(counts, dtype=np.float64) @ weights


class CellRecorder(pl.Callback):
    """Note the cells of every training minibatch; in ``kill`` mode, end rank 1 mid-epoch."""

    def __init__(self, kill_rank: int | None) -> None:
        self.kill_rank = kill_rank
        self.seen: dict[int, list[np.ndarray]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.kill_rank and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        # A semi-supervised minibatch is (cells, labeled cells): the first is the epoch's pass.
        cells_batch = batch[0] if isinstance(batch, (tuple, list)) else batch
        cells = fingerprints(cells_batch[cellvi.REGISTRY_KEYS.X_KEY].cpu().numpy())
        self.seen.setdefault(trainer.current_epoch, []).append(cells)


class OneProcessSameOrder(DataSplitter):
    """The training cells in the epoch orders of a one-process ``DistributedSampler``."""

    def train_dataloader(self) -> AnnDataLoader:
        sampler = BatchDistributedSampler(
            self.train_idx, batch_size=128, num_replicas=1, rank=0, shuffle=True, seed=0
        )
        return AnnDataLoader(self.adata_manager, indices=self.train_idx, sampler=sampler)


def main(out: Path, mode: str) -> None:
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid(batch_size=200, n_genes=N_GENES)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    splitter_kw = {}
    if mode == "ddp-backed":
        # Each rank its own copy of the file; blocks of one cell: the resident run's shares.
        adata.write_h5ad(out / f"data{rank}.h5ad")
        adata = anndata.read_h5ad(out / f"data{rank}.h5ad", backed="r")
        splitter_kw = {"datasplitter_kwargs": {"streaming": {"block_size": 1}}}
    if mode == "scanvi-ddp":
        labels = adata.obs["labels"].astype(str).to_numpy()
        labels[::2] = "unknown"
        adata.obs["labels"] = labels
        SCANVI.setup_anndata(
            adata, labels_key="labels", unlabeled_category="unknown", batch_key="batch"
        )
        model = SCANVI(adata, **MODEL_KW)
    else:
        SCVI.setup_anndata(adata, batch_key="batch")
        model = SCVI(adata, **MODEL_KW)
    recorder = CellRecorder(kill_rank=1 if mode == "kill" else None)
    fit_kw = {
        "max_epochs": MAX_EPOCHS,
        "accelerator": "cpu",
        "train_size": 0.9,
        "enable_progress_bar": False,
        "callbacks": [recorder],
    }
    if mode == "single":
        splitter = OneProcessSameOrder(model.adata_manager, train_size=0.9, batch_size=128)
        model.train(devices=1, datamodule=splitter, **fit_kw)
    else:
        model.train(devices=2, strategy="ddp", batch_size=64, **splitter_kw, **fit_kw)
    model.save(out / "model", overwrite=True, save_anndata=True)
    weights = torch.cat([value.flatten() for value in model.module.state_dict().values()])
    np.savez(
        out / f"rank{rank}.npz",
        weights=weights.numpy(),
        latent=model.get_latent_representation(),
        train_cells=fingerprints(adata.X[np.sort(model.train_indices)]),
        elbo_train=model.history["elbo_train"].to_numpy().ravel(),
        **{f"epoch{epoch}": np.concatenate(cells) for epoch, cells in recorder.seen.items()},
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
