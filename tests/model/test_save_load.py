"""``save`` / ``load``: code-free files (safetensors + JSON), atomic writes, clear errors."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch

import cellvi
from cellvi.model import SCVI
from cellvi.model.base import ModelFileError, _files

from ._model_helpers import TRAIN_KW, train_scvi


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory) -> Path:
    """The session's trained model saved with its AnnData (do not modify: copy first)."""
    directory = tmp_path_factory.mktemp("saved") / "model"
    trained[0].save(directory, save_anndata=True)
    return directory


def _copy(saved: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir(parents=True)
    for file in saved.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


def _edit_json(directory: Path, edit, reseal: bool = True) -> None:
    """Edit ``model.json``; ``reseal`` recomputes its own checksum, as a forger would."""
    path = directory / "model.json"
    description = json.loads(path.read_text())
    edit(description)
    if reseal:
        description = _files.seal(description)
    path.write_text(json.dumps(description))


def _record_weights(directory: Path) -> None:
    """Record the current weights' checksum in ``model.json`` (resealed)."""
    digest = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    _edit_json(directory, lambda d: d["files"].update({"model.safetensors": digest}))


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---- round trips ----------------------------------------------------------------------


def test_round_trip_with_saved_anndata(trained, saved):
    model, _ = trained
    loaded = SCVI.load(saved, accelerator="cpu")
    assert type(loaded) is SCVI and loaded.id != model.id
    assert loaded.is_trained_ is True
    assert loaded.init_params_ == model.init_params_
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
    for name in ("train_indices", "validation_indices", "test_indices"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
        assert getattr(loaded, name).dtype == np.int64
    assert set(loaded.history_) == set(model.history_)
    for name, frame in model.history_.items():
        pd.testing.assert_frame_equal(loaded.history_[name], frame)
    state = model.module.state_dict()
    for name, tensor in loaded.module.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert loaded.adata_manager.registry["field_registries"] == json.loads(
        json.dumps(model.adata_manager.registry["field_registries"])
    )
    assert repr(loaded) == repr(model)
    assert not loaded.module.training


def test_round_trip_onto_a_provided_anndata(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m")
    assert _listing(tmp_path / "m") == ["model.json", "model.safetensors"]
    with pytest.raises(ModelFileError, match="adata"):
        SCVI.load(tmp_path / "m")
    fresh = cellvi.data.synthetic_iid(seed=0)
    loaded = SCVI.load(tmp_path / "m", adata=fresh, accelerator="cpu")
    assert loaded.adata is fresh
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
    assert loaded.is_trained_ and len(loaded.history_["elbo_train"]) == 3


def test_loading_maps_categories_by_name(trained, saved):
    """An AnnData whose batch categories are declared in another order gets training codes."""
    model, _ = trained
    adata = cellvi.data.synthetic_iid(seed=0)
    adata.obs["batch"] = adata.obs["batch"].cat.reorder_categories(["batch_1", "batch_0"])
    loaded = SCVI.load(saved, adata=adata, accelerator="cpu")
    np.testing.assert_array_equal(adata.obs["_scvi_batch"].to_numpy(), np.repeat([0, 1], 200))
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )


def test_loaded_model_trains_further(saved):
    loaded = SCVI.load(saved, accelerator="cpu")
    before = loaded.get_latent_representation()
    epochs_before = len(loaded.history_["elbo_train"])
    loaded.train(max_epochs=1, **TRAIN_KW)
    # The loaded history continues, as after a second train() in scvi-tools.
    assert len(loaded.history_["elbo_train"]) == epochs_before + 1
    assert not np.allclose(loaded.get_latent_representation(), before)


def test_prefix_keeps_models_apart(trained, tmp_path):
    model, adata = trained
    other = SCVI(adata, n_latent=4)
    model.save(tmp_path, prefix="a_", save_anndata=True)
    other.save(tmp_path, prefix="b_")
    assert _listing(tmp_path) == [
        "a_adata.h5ad",
        "a_model.json",
        "a_model.safetensors",
        "b_model.json",
        "b_model.safetensors",
    ]
    assert SCVI.load(tmp_path, prefix="a_").module.n_latent == 10
    assert SCVI.load(tmp_path, prefix="b_", adata=adata).module.n_latent == 4
    with pytest.raises(ModelFileError, match="prefix"):
        SCVI.load(tmp_path)


def test_overwrite(trained, tmp_path):
    model, adata = trained
    model.save(tmp_path / "m")
    other = SCVI(adata, n_latent=4)
    with pytest.raises(FileExistsError, match="overwrite"):
        other.save(tmp_path / "m")
    assert SCVI.load(tmp_path / "m", adata=adata).module.n_latent == 10  # untouched
    other.save(tmp_path / "m", overwrite=True)
    assert SCVI.load(tmp_path / "m", adata=adata).module.n_latent == 4
    assert _listing(tmp_path / "m") == ["model.json", "model.safetensors"]


def test_overwrite_without_anndata_drops_the_old_anndata(trained, tmp_path):
    """A stale adata.h5ad of the replaced model must not be loaded with the new one."""
    model, adata = trained
    model.save(tmp_path / "m", save_anndata=True)
    SCVI(adata, n_latent=4).save(tmp_path / "m", overwrite=True)
    assert _listing(tmp_path / "m") == ["model.json", "model.safetensors"]
    with pytest.raises(ModelFileError, match="adata"):
        SCVI.load(tmp_path / "m")


# ---- what is on disk --------------------------------------------------------------------


def test_files_are_safetensors_json_and_h5ad_only(trained, saved):
    model, _ = trained
    assert _listing(saved) == ["adata.h5ad", "model.json", "model.safetensors"]
    assert not list(saved.glob("*.pt")) and not list(saved.glob("*.pkl"))
    raw = (saved / "model.safetensors").read_bytes()
    header_size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_size])  # safetensors: a JSON header, then raw bytes
    state = model.module.state_dict()
    assert set(header) - {"__metadata__"} == set(state)
    tensors = safetensors.torch.load_file(saved / "model.safetensors")
    for name, tensor in state.items():
        assert torch.equal(tensors[name], tensor), name
    adata = anndata.read_h5ad(saved / "adata.h5ad")
    assert adata.shape == (400, 100)


def test_json_description(trained, saved):
    model, _ = trained
    description = json.loads((saved / "model.json").read_text())
    assert description["format"] == "cellvi-model"
    assert description["format_version"] == 2
    assert description["cellvi_version"] == cellvi.__version__
    assert description["model_class"] == "SCVI"
    assert description["init_params"] == model.init_params_
    assert description["registry"] == json.loads(json.dumps(model.adata_manager.registry))
    assert description["registry"]["setup_args"]["batch_key"] == "batch"
    for name in ("model.safetensors", "adata.h5ad"):
        digest = hashlib.sha256((saved / name).read_bytes()).hexdigest()
        assert description["files"][name] == digest  # every file of the model is covered
    assert description["description_sha256"] == _files.seal(description)["description_sha256"]
    attributes = description["attributes"]
    assert attributes["is_trained_"] is True
    assert attributes["train_indices"] == model.train_indices.tolist()
    assert set(attributes["history_"]) == set(model.history_)


def test_non_json_init_parameter_is_refused(tmp_path):
    adata = cellvi.data.synthetic_iid(seed=0)
    SCVI.setup_anndata(adata, batch_key="batch")
    model = SCVI(adata, var_activation=torch.nn.functional.softplus)
    with pytest.raises(TypeError, match="var_activation"):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_loading_never_unpickles(saved, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model file was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    loaded = SCVI.load(saved, accelerator="cpu")
    assert loaded.is_trained_


# ---- data that does not fit --------------------------------------------------------------


def test_load_onto_different_genes_fails_clearly(saved):
    adata = cellvi.data.synthetic_iid(seed=0)
    with pytest.raises(ValueError, match="90 genes but the model was set up with 100"):
        SCVI.load(saved, adata=adata[:, :90].copy())
    with pytest.raises(ValueError, match="genes differ"):
        SCVI.load(saved, adata=adata[:, ::-1].copy())


def test_load_with_an_unseen_batch_fails_naming_it(saved):
    adata = cellvi.data.synthetic_iid(seed=0)
    adata.obs["batch"] = adata.obs["batch"].cat.rename_categories({"batch_1": "batch_new"})
    with pytest.raises(ValueError, match="batch_new"):
        SCVI.load(saved, adata=adata)
    assert "_scvi_batch" not in adata.obs  # a failed load leaves the data as it was


# ---- damaged or foreign files -------------------------------------------------------------


def test_corrupt_json(saved, tmp_path):
    directory = _copy(saved, tmp_path)
    (directory / "model.json").write_text('{"format": "cellvi-model", ')
    with pytest.raises(ModelFileError, match="JSON"):
        SCVI.load(directory)
    (directory / "model.json").write_text("[1, 2]")
    with pytest.raises(ModelFileError, match="not a cellvi model"):
        SCVI.load(directory)


def test_tampered_weights_fail_the_checksum(saved, tmp_path):
    directory = _copy(saved, tmp_path)
    weights = directory / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0x01  # one bit of a tensor value
    weights.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="checksum"):
        SCVI.load(directory)


def test_weights_of_the_wrong_shape_with_a_matching_checksum(saved, tmp_path):
    directory = _copy(saved, tmp_path)
    weights = directory / "model.safetensors"
    tensors = safetensors.torch.load_file(weights)
    tensors["px_r"] = torch.zeros(3, 7)
    safetensors.torch.save_file(tensors, weights)
    _record_weights(directory)
    with pytest.raises(ModelFileError, match="px_r"):
        SCVI.load(directory)


def test_missing_weight_tensor_with_a_matching_checksum(saved, tmp_path):
    directory = _copy(saved, tmp_path)
    weights = directory / "model.safetensors"
    tensors = safetensors.torch.load_file(weights)
    del tensors["px_r"]
    safetensors.torch.save_file(tensors, weights)
    _record_weights(directory)
    with pytest.raises(ModelFileError, match="px_r"):
        SCVI.load(directory)


def test_newer_format_version_asks_to_upgrade(saved, tmp_path):
    directory = _copy(saved, tmp_path)
    _edit_json(directory, lambda d: d.update(format_version=999))
    with pytest.raises(ModelFileError, match="(?i)upgrade"):
        SCVI.load(directory)


def test_wrong_model_class(saved, tmp_path):
    directory = _copy(saved, tmp_path)
    _edit_json(directory, lambda d: d.update(model_class="TOTALVI"))
    with pytest.raises(ModelFileError, match="TOTALVI"):
        SCVI.load(directory)


def test_missing_entries_and_files(saved, tmp_path):
    directory = _copy(saved, tmp_path)
    _edit_json(directory, lambda d: d.pop("registry"))
    with pytest.raises(ModelFileError, match="registry"):
        SCVI.load(directory)
    directory = _copy(saved, tmp_path / "x")
    (directory / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="missing"):
        SCVI.load(directory)
    with pytest.raises(ModelFileError, match="No saved model"):
        SCVI.load(tmp_path / "nowhere")


def test_loading_without_any_anndata(saved, tmp_path):
    directory = _copy(saved, tmp_path)
    (directory / "adata.h5ad").unlink()
    with pytest.raises(ModelFileError, match="adata=adata"):
        SCVI.load(directory)


# ---- failed saves ----------------------------------------------------------------------------


def _fail(*args, **kwargs):
    raise OSError("disk full (simulated)")


def test_failed_save_into_a_new_directory_leaves_nothing(trained, tmp_path, monkeypatch):
    model, _ = trained
    monkeypatch.setattr(_files, "save_file", _fail)
    with pytest.raises(OSError, match="simulated"):
        model.save(tmp_path / "new")
    assert _listing(tmp_path) == []


def test_failed_save_into_an_existing_directory_leaves_it_as_it_was(
    trained, tmp_path, monkeypatch
):
    model, _ = trained
    (tmp_path / "notes.txt").write_text("keep me")
    monkeypatch.setattr(anndata.AnnData, "write_h5ad", _fail)
    with pytest.raises(OSError, match="simulated"):
        model.save(tmp_path, save_anndata=True)
    assert _listing(tmp_path) == ["notes.txt"]  # no model files, no staging directory


@pytest.mark.parametrize("failing", ["weights", "anndata"])
def test_failed_overwrite_keeps_the_previous_model(trained, tmp_path, monkeypatch, failing):
    model, adata = trained
    model.save(tmp_path, save_anndata=True)
    before = _listing(tmp_path)
    other = SCVI(adata, n_latent=4)
    if failing == "weights":
        monkeypatch.setattr(_files, "save_file", _fail)
    else:
        monkeypatch.setattr(anndata.AnnData, "write_h5ad", _fail)
    with pytest.raises(OSError, match="simulated"):
        other.save(tmp_path, overwrite=True, save_anndata=True)
    monkeypatch.undo()
    assert _listing(tmp_path) == before
    loaded = SCVI.load(tmp_path, accelerator="cpu")
    assert loaded.module.n_latent == 10
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )


def test_save_load_round_trip_of_a_model_with_every_field(tmp_path):
    """Covariates, size factors, a layer and a modelled library survive the round trip."""
    rng = np.random.default_rng(0)
    adata = cellvi.data.synthetic_iid(seed=0)
    adata.layers["counts"] = adata.X.copy()
    adata.obs["sf"] = rng.uniform(0.5, 2.0, adata.n_obs)
    adata.obs["donor"] = rng.choice(["d1", "d2"], adata.n_obs)
    adata.obs["age"] = rng.normal(size=adata.n_obs)
    SCVI.setup_anndata(
        adata,
        layer="counts",
        batch_key="batch",
        labels_key="labels",
        size_factor_key="sf",
        categorical_covariate_keys=["donor"],
        continuous_covariate_keys=["age"],
    )
    model, _ = train_scvi(adata, max_epochs=1, n_hidden=16, dispersion="gene-label")
    model.save(tmp_path / "m", save_anndata=True)
    loaded = SCVI.load(tmp_path / "m", accelerator="cpu")
    assert loaded.module.n_cats_per_cov == [2] and loaded.module.n_continuous_cov == 1
    assert loaded.module.use_size_factor_key and loaded.module.px_r.shape == (3, 100)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )


def test_saved_library_prior_is_kept_on_load(tmp_path):
    """A modelled library's prior is the saved one, not re-estimated from the load data."""
    adata = cellvi.data.synthetic_iid(seed=0)
    SCVI.setup_anndata(adata, batch_key="batch")
    model = SCVI(adata, use_observed_lib_size=False, n_hidden=16)
    model.is_trained_ = True  # the initial weights are enough for a round trip
    model.save(tmp_path / "lib")
    other = cellvi.data.synthetic_iid(seed=3, dropout_ratio=0.2)
    loaded = SCVI.load(tmp_path / "lib", adata=other)
    assert loaded.module.l_encoder is not None
    assert torch.equal(loaded.module.library_log_means, model.module.library_log_means)
    assert torch.equal(loaded.module.library_log_vars, model.module.library_log_vars)
    assert not torch.equal(
        SCVI(other, use_observed_lib_size=False).module.library_log_means,
        model.module.library_log_means,
    )


def test_library_priors_saved_as_columns_by_cellvi_0_1_still_fit(tmp_path):
    from cellvi.model.base._files import ModelPaths
    from cellvi.model.base._persistence import _check_shapes

    adata = cellvi.data.synthetic_iid(seed=0)
    SCVI.setup_anndata(adata, batch_key="batch")
    model = SCVI(adata, use_observed_lib_size=False)
    state = model.module.state_dict()
    assert state["library_log_means"].shape == (1, 2)
    old = {name: tensor.clone() for name, tensor in state.items()}
    for name in ("library_log_means", "library_log_vars"):
        old[name] = old[name].reshape(2, 1)  # cellvi 0.1's layout
    paths = ModelPaths(tmp_path, "")
    _check_shapes(model.module, old, paths)  # the old layout fits
    fresh = SCVI(adata, use_observed_lib_size=False)
    fresh.module.load_state_dict(old)
    torch.testing.assert_close(fresh.module.library_log_means, state["library_log_means"])
    old["library_log_means"] = torch.zeros(3, 1)  # another number of batches does not
    with pytest.raises(ModelFileError, match="library_log_means"):
        _check_shapes(model.module, old, paths)
