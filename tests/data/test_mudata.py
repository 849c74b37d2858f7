"""MuData fields: each AnnData field applied to one modality of a MuData."""

from __future__ import annotations

import numpy as np
import pytest

import cellvi
from cellvi.data import REGISTRY_KEYS, AnnDataManager
from cellvi.data.fields import (
    BaseMuDataWrapperClass,
    LayerField,
    MuDataCategoricalJointObsField,
    MuDataCategoricalObsField,
    MuDataLabelsWithUnlabeledObsField,
    MuDataLayerField,
    MuDataNumericalJointObsField,
    MuDataNumericalObsField,
    MuDataObsmField,
    MuDataProteinLayerField,
    MuDataWrapper,
)

mudata = pytest.importorskip("mudata")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


@pytest.fixture
def mdata():
    data = cellvi.data.synthetic_iid(batch_size=20, n_genes=8, n_proteins=4, return_mudata=True)
    rng = np.random.default_rng(0)
    data.obs["donor"] = rng.choice(["d1", "d2"], data.n_obs)
    data.obs["age"] = rng.normal(50, 10, data.n_obs)
    data.mod["rna"].obs["size_factor"] = rng.uniform(0.5, 2, data.n_obs)
    data.mod["rna"].obsm["embedding"] = rng.normal(size=(data.n_obs, 3))
    return data


def mudata_fields():
    batch = MuDataCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, "batch")
    return [
        MuDataLayerField(REGISTRY_KEYS.X_KEY, None, mod_key="rna", mod_required=True),
        batch,
        MuDataLabelsWithUnlabeledObsField(REGISTRY_KEYS.LABELS_KEY, "labels", "Unknown"),
        MuDataNumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, "size_factor", mod_key="rna"),
        MuDataCategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, ["donor"]),
        MuDataNumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, ["age"]),
        MuDataObsmField("embedding", "embedding", mod_key="rna"),
        MuDataProteinLayerField(
            REGISTRY_KEYS.PROTEIN_EXP_KEY,
            None,
            mod_key="protein_expression",
            mod_required=True,
            batch_field=batch,
        ),
    ]


def test_each_field_reads_its_modality(mdata):
    manager = AnnDataManager(mudata_fields())
    manager.register_fields(mdata)
    registry = manager.data_registry
    assert registry.X == {"attr_name": "X", "attr_key": None, "mod_key": "rna"}
    assert registry.batch.mod_key is None and registry.size_factor.mod_key == "rna"
    np.testing.assert_array_equal(manager.get_from_registry("X"), mdata.mod["rna"].X)
    np.testing.assert_array_equal(
        manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY).ravel(),
        mdata.obs["batch"].cat.codes.to_numpy(),
    )
    assert "_scvi_batch" in mdata.obs and "_scvi_uuid" in mdata.uns
    assert manager.summary_stats == {
        "n_vars": 8,
        "n_cells": 40,
        "n_batch": 2,
        "n_labels": 4,  # three labels and the unlabeled category
        "n_extra_categorical_covs": 1,
        "n_extra_continuous_covs": 1,
        "n_embedding": 3,
        "n_proteins": 4,
    }
    batch = manager.create_torch_dataset()[[0, 39]]
    assert batch["proteins"].shape == (2, 4) and batch["batch"].ravel().tolist() == [0, 1]


def test_the_protein_modality_gets_the_batch_codes_for_its_mask(mdata):
    proteins = mdata.mod["protein_expression"]
    proteins.X[20:, 2] = 0  # protein 2 unmeasured in batch 1
    manager = AnnDataManager(mudata_fields())
    manager.register_fields(mdata)
    mask = manager.get_state_registry(REGISTRY_KEYS.PROTEIN_EXP_KEY).protein_batch_mask
    assert mask["0"].all() and not mask["1"][2]
    np.testing.assert_array_equal(proteins.obs["_scvi_batch"], mdata.obs["_scvi_batch"])


def test_transfer_to_another_mudata_keeps_the_codes(mdata):
    manager = AnnDataManager(mudata_fields())
    manager.register_fields(mdata)
    query = cellvi.data.synthetic_iid(
        batch_size=20, n_genes=8, n_proteins=4, return_mudata=True, seed=1
    )
    for key in ("donor", "age"):
        query.obs[key] = mdata.obs[key].to_numpy()
    query.mod["rna"].obs["size_factor"] = 1.0
    query.mod["rna"].obsm["embedding"] = np.zeros((40, 3))
    query.obs["batch"] = query.obs["batch"].cat.set_categories(["batch_1", "batch_0"])
    new = manager.transfer_fields(query)
    codes = query.obs["batch"].map({"batch_0": 0, "batch_1": 1}).astype(int).to_numpy()
    np.testing.assert_array_equal(new.get_from_registry("batch").ravel(), codes)


def test_a_failed_registration_leaves_every_modality_as_it_was(mdata):
    mdata.mod["rna"].obs.drop(columns="size_factor", inplace=True)
    with pytest.raises(KeyError, match="size_factor"):
        AnnDataManager(mudata_fields()).register_fields(mdata)
    assert not [c for c in mdata.obs.columns if str(c).startswith("_scvi")]
    for modality in mdata.mod.values():
        assert not [c for c in modality.obs.columns if str(c).startswith("_scvi")]
    assert "_scvi_uuid" not in mdata.uns


def test_views_unpaired_cells_and_anndata_are_refused(mdata):
    with pytest.raises(ValueError, match="MuData is a view"):
        AnnDataManager(mudata_fields()).register_fields(mdata[:10])
    unpaired = mudata.MuData(
        {
            "rna": mdata.mod["rna"].copy(),
            "protein_expression": mdata.mod["protein_expression"][:30].copy(),
        }
    )
    with pytest.raises(ValueError, match="'protein_expression' lacks 10 of the MuData's cells"):
        AnnDataManager(mudata_fields()).register_fields(unpaired)
    with pytest.raises(ValueError, match="reads a MuData, got a AnnData; use LayerField"):
        AnnDataManager(mudata_fields()[:1]).register_fields(cellvi.data.synthetic_iid())
    with pytest.raises(ValueError, match="Modality 'atac' is not in mdata.mod"):
        AnnDataManager([MuDataLayerField("X", None, mod_key="atac")]).register_fields(mdata)


def test_the_wrapper_makes_named_classes_and_checks_its_arguments():
    assert MuDataLayerField.__name__ == "MuDataLayerField"
    assert issubclass(MuDataLayerField, BaseMuDataWrapperClass)
    field = MuDataLayerField(REGISTRY_KEYS.X_KEY, "counts", mod_key="rna", is_count_data=False)
    assert isinstance(field.adata_field, LayerField) and not field.adata_field.is_count_data
    assert field.registry_key == "X" and field.attr_name == "layers" and field.attr_key == "counts"
    with pytest.raises(ValueError, match="give its mod_key"):
        MuDataLayerField(REGISTRY_KEYS.X_KEY, None, mod_required=True)
    with pytest.raises(ValueError, match="Expected a field class"):
        MuDataWrapper(LayerField(REGISTRY_KEYS.X_KEY, None))
    calls = []
    Recorded = MuDataWrapper(LayerField, preregister_fn=lambda f, m: calls.append((f, m)))
    data = cellvi.data.synthetic_iid(batch_size=5, n_genes=3, return_mudata=True)
    recorded = Recorded(REGISTRY_KEYS.X_KEY, None, mod_key="rna")
    AnnDataManager([recorded]).register_fields(data)
    assert calls == [(recorded, data)]
