"""Fixtures of the model-layer tests (helpers live in ``_model_helpers``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from _model_helpers import train_scvi
from anndata import AnnData

import cellvi
from cellvi.model import SCVI

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("lightning.fabric").setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def _restore_seed() -> Iterator[None]:
    """Tests that set ``cellvi.settings.seed`` leave it unset afterwards."""
    yield
    cellvi.settings.seed = None


@pytest.fixture(scope="session")
def trained() -> tuple[SCVI, AnnData]:
    """A trained SCVI (3 epochs, seed 0; 360/20/20 split) and its AnnData: read only."""
    model, adata = train_scvi()
    assert model.is_trained_
    return model, adata
