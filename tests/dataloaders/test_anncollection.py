"""``CollectionAdapter``: an AnnCollection set up, loaded and trained on as an AnnData."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from anndata import AnnData
from anndata.experimental import AnnCollection
from scipy import sparse

import cellvi
from cellvi.data import REGISTRY_KEYS
from cellvi.dataloaders import AnnDataLoader, CollectionAdapter

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*"),
    pytest.mark.filterwarnings("ignore:adata.obs_names are not unique"),
]


@pytest.fixture
def adatas() -> list[AnnData]:
    parts = []
    for seed in (0, 1):
        adata = cellvi.data.synthetic_iid(batch_size=30, n_genes=20, seed=seed)
        adata.layers["counts"] = sparse.csr_matrix(adata.X)
        adata.obs_names = [f"s{seed}_{name}" for name in adata.obs_names]
        parts.append(adata)
    parts[1].obs["labels"] = "Unknown"
    return parts


@pytest.fixture
def adapter(adatas) -> CollectionAdapter:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # anndata's experimental module
        collection = AnnCollection(adatas, join_vars="inner", join_obs="inner", label="dataset")
    return CollectionAdapter(collection)


def test_the_adapter_answers_as_an_anndata(adapter, adatas):
    assert isinstance(adapter, AnnData)
    assert adapter.n_obs == len(adapter) == 120 and adapter.n_vars == 20
    assert list(adapter.layers) == ["counts"] and "counts" in adapter.layers
    joined = np.concatenate([a.layers["counts"].toarray() for a in adatas])
    np.testing.assert_array_equal(adapter.layers["counts"].toarray(), joined)
    np.testing.assert_array_equal(np.asarray(adapter.X), np.concatenate([a.X for a in adatas]))
    assert list(adapter.var.index) == list(adatas[0].var_names)
    assert adapter.uns == {} and not adapter.is_view and not adapter.isbacked
    assert adapter[5:7].n_obs == 2
    with pytest.raises(KeyError):
        adapter.layers["absent"]


def test_scvi_sets_up_trains_and_reloads_on_the_adapter(adapter, adatas, tmp_path):
    cellvi.model.SCVI.setup_anndata(
        adapter, layer="counts", batch_key="dataset", labels_key="labels"
    )
    assert adapter.uns["_scvi_uuid"]
    np.testing.assert_array_equal(adapter.obs["_scvi_batch"], np.repeat([0, 1], 60))
    model = cellvi.model.SCVI(adapter, n_latent=4)
    assert model.summary_stats.n_batch == 2 and model.summary_stats.n_labels == 4
    (batch,) = AnnDataLoader(model.adata_manager, indices=[0, 61], batch_size=2)
    np.testing.assert_array_equal(
        batch[REGISTRY_KEYS.X_KEY].numpy(),
        np.stack([adatas[0].X[0], adatas[1].X[1]]),
    )
    model.train(max_epochs=1, batch_size=32)
    assert model.get_latent_representation().shape == (120, 4)
    model.save(tmp_path / "model", save_anndata=False)
    loaded = cellvi.model.SCVI.load(tmp_path / "model", adata=adapter)
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), rtol=1e-5
    )
