"""Fixtures of the model-layer tests (helpers live in ``_model_helpers``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch
from anndata import AnnData

import cellvi
from cellvi.model import SCVI

from ._model_helpers import train_scvi

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("lightning.fabric").setLevel(logging.ERROR)


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run these tests' tiny models on one torch thread, restoring the count afterwards.

    Minibatches of 128 cells x 100 genes gain nothing from intra-op threads, while OpenMP
    threads that spin against other busy processes made this directory up to 4x slower on
    two shared cores.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _restore_seed() -> Iterator[None]:
    """Tests that set ``cellvi.settings.seed`` leave it unset afterwards."""
    yield
    cellvi.settings.seed = None


@pytest.fixture(scope="package")
def trained(_one_torch_thread: None) -> tuple[SCVI, AnnData]:
    """A trained SCVI (3 epochs, seed 0; 360/20/20 split) and its AnnData: read only."""
    model, adata = train_scvi()
    assert model.is_trained_
    return model, adata
