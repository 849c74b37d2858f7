"""Helpers of the model-layer tests: tiny training settings and a briefly trained SCVI.

Training is kept tiny (400 x 100 synthetic cells, a few epochs, CPU, no progress bar) so the
whole directory runs in well under a minute and a half on two cores.
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData

import cellvi
from cellvi.model import SCVI

# Passed to every model.train() call of these tests.
TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}
BATCHES = np.repeat([0, 1], 200)  # batch codes of synthetic_iid's 400 cells


def train_scvi(
    adata: AnnData | None = None, seed: int | None = 0, max_epochs: int = 3, **model_kwargs
) -> tuple[SCVI, AnnData]:
    """An SCVI on ``adata`` (default: synthetic_iid set up with its batch), trained briefly.

    The split is 360 train / 20 validation / 20 test cells, validated every epoch.
    ``cellvi.settings.seed`` is unset again afterwards.
    """
    cellvi.settings.seed = seed
    try:
        if adata is None:
            adata = cellvi.data.synthetic_iid(seed=0)
            SCVI.setup_anndata(adata, batch_key="batch")
        model = SCVI(adata, **model_kwargs)
        model.train(
            max_epochs=max_epochs, validation_size=0.05, check_val_every_n_epoch=1, **TRAIN_KW
        )
    finally:
        cellvi.settings.seed = None
    return model, adata
