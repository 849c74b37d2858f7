"""Model-layer names scvi-tools code reads: batch representation, adata setter, fc_layers, ..."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cellvi
from cellvi import REGISTRY_KEYS
from cellvi.model import SCVI
from cellvi.model.base._constants import SAVE_KEYS
from cellvi.module._constants import MODULE_KEYS

from ._model_helpers import TRAIN_KW


@pytest.fixture
def adata():
    data = cellvi.data.synthetic_iid(n_batches=3)
    SCVI.setup_anndata(data, batch_key="batch")
    return data


def test_batch_representation_is_each_cells_batch_embedding(adata, tmp_path):
    model = SCVI(
        adata, batch_representation="embedding", batch_embedding_kwargs={"embedding_dim": 4}
    )
    model.train(max_epochs=1, **TRAIN_KW)
    rep = model.get_batch_representation()
    table = model.module.get_embedding(REGISTRY_KEYS.BATCH_KEY).weight.detach().numpy()
    codes = adata.obs["_scvi_batch"].to_numpy()
    np.testing.assert_allclose(rep, table[codes])
    model.save(tmp_path / "m")
    loaded = SCVI.load(tmp_path / "m", adata=adata, accelerator="cpu")
    np.testing.assert_allclose(loaded.get_batch_representation(), rep)
    with pytest.raises(KeyError, match="exists already"):
        loaded.module.init_embedding(REGISTRY_KEYS.BATCH_KEY, 3)
    with pytest.raises(KeyError, match="No embedding 'labels'"):
        loaded.module.remove_embedding(REGISTRY_KEYS.LABELS_KEY)
    loaded.module.remove_embedding(REGISTRY_KEYS.BATCH_KEY)
    with pytest.raises(KeyError):
        loaded.get_batch_representation()


def test_a_cellvi_0_1_batch_embedding_still_loads():
    from cellvi.module import VAE

    module = VAE(20, n_batch=2, batch_representation="embedding")
    state = dict(module.state_dict())
    state["batch_embedding.weight"] = state.pop("_embeddings_dict.batch.weight") + 1
    module.load_state_dict(state)
    torch.testing.assert_close(module.batch_embedding.weight, state["batch_embedding.weight"])


def test_setting_adata_rebinds_the_model(adata):
    model = SCVI(adata)
    other = cellvi.data.synthetic_iid(n_batches=3, seed=4)
    model.adata = other
    assert model.adata is other and model.registry_ is model.get_anndata_manager(other).registry
    assert model.summary_stats.n_batch == 3
    broken = cellvi.data.synthetic_iid(n_batches=3)
    del broken.obs["batch"]
    with pytest.raises(KeyError, match="batch"):
        model.adata = broken
    with pytest.raises(ValueError, match="cannot be set to None"):
        model.adata = None


def test_fc_layers_is_a_view_of_the_layers_in_scvi_tools_layout(adata):
    model = SCVI(adata, n_layers=2)
    layers = model.module.z_encoder.encoder
    view = layers.fc_layers
    assert view[0][0].linear is layers.linears[0] and view[1][0].linear is layers.linears[1]
    assert isinstance(view[0][1], torch.nn.BatchNorm1d)
    assert set(layers.state_dict()) == {name for name, _ in layers.named_parameters()} | {
        name for name, _ in layers.named_buffers()
    }  # the view adds no tensors


def test_indices_under_both_names_and_the_constants(adata):
    model = SCVI(adata)
    model.train(max_epochs=1, **TRAIN_KW)
    np.testing.assert_array_equal(model.train_indices_, model.train_indices)
    assert SAVE_KEYS.MODEL_FNAME == "model.pt" and MODULE_KEYS.QZ_KEY == "qz"


def test_parse_device_args_resolves_as_lightning_and_refuses_several_for_one():
    from cellvi.model._utils import parse_device_args

    accelerator, devices = parse_device_args("cpu", 1)
    assert accelerator == "cpu" and devices == 1
    assert parse_device_args("cpu", "auto", return_device="torch")[2] == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert parse_device_args(return_device="torch")[2].type == expected
    with pytest.raises(ValueError, match="several devices"):
        parse_device_args("cpu", [0, 1], return_device="torch", validate_single_device=True)
    with pytest.raises(ValueError, match="JAX"):
        parse_device_args(return_device="jax")
