"""Data changed after registration, odd category types, and bad values are caught clearly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import cellvi
from cellvi.model import SCVI

from ._model_helpers import TRAIN_KW, train_scvi


@pytest.fixture
def fitted():
    model, adata = train_scvi(max_epochs=1, encode_covariates=True)
    return model, adata


# 8. The training AnnData edited in place ------------------------------------------------------


def test_genes_reordered_in_place_are_refused(fitted):
    model, adata = fitted
    adata._inplace_subset_var(np.arange(adata.n_vars)[::-1])  # same genes, reversed order
    with pytest.raises(ValueError, match="genes of this AnnData changed since it was registered"):
        model.get_latent_representation()


def test_genes_subset_in_place_are_refused(fitted):
    model, adata = fitted
    adata._inplace_subset_var(np.arange(80))
    with pytest.raises(ValueError, match="80 genes now, 100 registered"):
        model.get_elbo()


def test_relabelled_cells_are_read_with_their_new_labels(fitted):
    """Codes follow the current values: the same answer as a fresh copy carrying the edit."""
    model, adata = fitted
    adata.obs["batch"] = adata.obs["batch"].cat.reorder_categories(["batch_1", "batch_0"])
    adata.obs.loc[adata.obs_names[:50], "batch"] = "batch_1"
    fresh = adata.copy()
    del fresh.uns["_scvi_uuid"]
    edited = model.get_latent_representation()
    np.testing.assert_allclose(edited, model.get_latent_representation(fresh), rtol=1e-6)
    assert (adata.obs["_scvi_batch"].to_numpy()[:50] == 1).all()  # codes rewritten


def test_a_renamed_category_is_refused_naming_it(fitted):
    model, adata = fitted
    adata.obs["batch"] = adata.obs["batch"].cat.rename_categories({"batch_0": "first"})
    with pytest.raises(ValueError, match=r"unseen at setup: \['first'\]"):
        model.get_latent_representation()


# 9. Dates and other non-string categories ------------------------------------------------------


def test_a_date_batch_trains_saves_and_loads(tmp_path):
    adata = cellvi.data.synthetic_iid()
    dates = np.where(np.arange(adata.n_obs) < 200, "2024-03-01", "2024-02-01")
    adata.obs["day"] = pd.to_datetime(dates)
    SCVI.setup_anndata(adata, batch_key="day")
    state = SCVI._setup_adata_manager_store[adata.uns["_scvi_uuid"]].get_state_registry("batch")
    assert list(state["categorical_mapping"]) == ["2024-02-01", "2024-03-01"]  # chronological
    assert set(adata.obs["_scvi_batch"]) == {0, 1}  # no -1 codes
    model = SCVI(adata)
    model.train(max_epochs=1, **TRAIN_KW)
    latent = model.get_latent_representation()
    model.save(tmp_path / "m", save_anndata=True)
    loaded = SCVI.load(tmp_path / "m", accelerator="cpu")
    np.testing.assert_array_equal(loaded.get_latent_representation(), latent)
    # A new AnnData with the same dates (as datetime64 again) maps onto the same codes.
    np.testing.assert_array_equal(model.get_latent_representation(adata.copy()), latent)


def test_integer_and_boolean_categories_register_by_their_string_form():
    adata = cellvi.data.synthetic_iid()
    adata.obs["plate"] = np.repeat([10, 2], 200)
    adata.obs["treated"] = np.tile([True, False], 200)
    SCVI.setup_anndata(adata, batch_key="plate", categorical_covariate_keys=["treated"])
    manager = SCVI._setup_adata_manager_store[adata.uns["_scvi_uuid"]]
    assert list(manager.get_state_registry("batch")["categorical_mapping"]) == ["2", "10"]
    covariates = manager.get_state_registry("extra_categorical_covs")["mappings"]
    assert {key: list(names) for key, names in covariates.items()} == {
        "treated": ["False", "True"]
    }


# 11. Bad values, refused where they are given ---------------------------------------------------


def test_zero_size_factors_are_refused_at_setup():
    adata = cellvi.data.synthetic_iid()
    adata.obs["sf"] = 1.0
    adata.obs.iloc[3, adata.obs.columns.get_loc("sf")] = 0.0
    with pytest.raises(ValueError, match=r"adata.obs\['sf'\] holds 1 size factors <= 0"):
        SCVI.setup_anndata(adata, size_factor_key="sf")


@pytest.mark.parametrize("max_epochs", [0, -1])
def test_max_epochs_below_one_is_refused(max_epochs):
    adata = cellvi.data.synthetic_iid()
    SCVI.setup_anndata(adata)
    model = SCVI(adata)
    with pytest.raises(ValueError, match="max_epochs must be an integer >= 1"):
        model.train(max_epochs=max_epochs, **TRAIN_KW)
    assert not model.is_trained_


def test_zero_monte_carlo_samples_are_refused(fitted):
    model, _ = fitted
    with pytest.raises(ValueError, match="mc_samples must be an integer >= 1"):
        model.get_latent_representation(mc_samples=0)


def test_a_backed_anndata_trains_from_its_file(tmp_path):
    path = tmp_path / "data.h5ad"
    in_memory = cellvi.data.synthetic_iid()
    in_memory.write_h5ad(path)
    import anndata

    backed = anndata.read_h5ad(path, backed="r")
    SCVI.setup_anndata(backed, batch_key="batch")
    model = SCVI(backed)
    with pytest.raises(ValueError, match="cannot hold a backed AnnData"):
        model.train(max_epochs=1, device_resident=True, **TRAIN_KW)
    model.train(max_epochs=1, **TRAIN_KW)  # "auto" reads minibatches from the file
    assert backed.isbacked  # never loaded into memory
    latent = model.get_latent_representation()
    np.testing.assert_allclose(latent, model.get_latent_representation(in_memory), rtol=1e-5)
