"""Small SCVI fits shared by the training-feature tests (synthetic_iid, CPU, no progress bar).

synthetic_iid has 400 cells; the default split (0.9 train) gives 360 training cells, so three
training steps an epoch at the default batch size of 128.
"""

from __future__ import annotations

import torch
from anndata import AnnData

import cellvi
from cellvi.model import SCVI

#: Passed to every train() call of these tests.
TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}
STEPS_PER_EPOCH = 3


def scvi_data() -> AnnData:
    """synthetic_iid(seed=0) set up for SCVI with its batch."""
    adata = cellvi.data.synthetic_iid(seed=0)
    SCVI.setup_anndata(adata, batch_key="batch")
    return adata


def new_model(adata: AnnData, seed: int = 0) -> SCVI:
    """A small SCVI on ``adata``, seeded so that its split and weights are reproducible."""
    cellvi.settings.seed = seed
    return SCVI(adata, n_hidden=16, n_latent=4)


def latent(model: SCVI, adata: AnnData) -> torch.Tensor:
    """The model's latent means of ``adata`` as a tensor."""
    return torch.as_tensor(model.get_latent_representation(adata))
