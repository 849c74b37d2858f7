"""SCANVI: setup, training on labeled and unlabeled cells, prediction, scVI start, save/load."""

from __future__ import annotations

import subprocess
import tarfile
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

import cellvi
from cellvi import REGISTRY_KEYS
from cellvi.dataloaders import AnnDataLoader, SemiSupervisedDataLoader
from cellvi.dataloaders._resident_loader import ResidentLoader
from cellvi.model import SCANVI, SCVI

from ._model_helpers import TRAIN_KW

ROOT = Path(__file__).resolve().parents[2]
PEER_TESTS = ROOT.parent / "shared" / "peer-tests" / "scvi-tools-1.4.2-tests.tar.gz"
CLASSIFIER_METRICS = ("classification_loss", "accuracy", "f1_score", "calibration_error")


def labeled_data(unlabeled: str = "label_0"):
    adata = cellvi.data.synthetic_iid(seed=0)
    SCANVI.setup_anndata(adata, "labels", unlabeled, batch_key="batch")
    return adata


def test_setup_reads_which_cells_are_labeled_and_the_labels_to_learn() -> None:
    adata = labeled_data()
    model = SCANVI(adata)
    unlabeled = (adata.obs["labels"] == "label_0").to_numpy()
    np.testing.assert_array_equal(model._unlabeled_indices, np.flatnonzero(unlabeled))
    np.testing.assert_array_equal(model._labeled_indices, np.flatnonzero(~unlabeled))
    # The unlabeled category is registered last, after the two labels the classifier predicts.
    assert list(model._label_mapping) == ["label_2", "label_1", "label_0"]
    assert model.n_labels == model.module.n_labels == 2
    assert model.unlabeled_category_ == "label_0" and model.original_label_key == "labels"
    np.testing.assert_array_equal(model.labels_, adata.obs["labels"].astype(str))


def test_training_logs_the_classifier_and_predict_labels_every_cell() -> None:
    adata = labeled_data()
    model = SCANVI(adata, n_latent=5)
    model.train(max_epochs=2, check_val_every_n_epoch=1, **TRAIN_KW)
    for split in ("train", "validation"):
        for metric in CLASSIFIER_METRICS:
            assert len(model.history[f"{split}_{metric}"]) == 2
    for metric in ("elbo_train", "elbo_validation", "train_loss"):
        assert metric in model.history
    hard = model.predict()
    assert hard.shape == (adata.n_obs,) and set(hard) <= {"label_1", "label_2"}
    soft = model.predict(indices=[3, 1], soft=True)
    assert isinstance(soft, pd.DataFrame) and list(soft.columns) == ["label_2", "label_1"]
    assert list(soft.index) == list(adata.obs_names[[3, 1]])
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(soft.idxmax(axis=1), model.predict(indices=[3, 1]))
    assert model.predict(indices=[]) == []
    other = cellvi.data.synthetic_iid(seed=0)
    assert model.predict(other, indices=[0, 1, 2]).shape == (3,)
    assert model.get_latent_representation().shape == (adata.n_obs, 5)


class _LabeledBatches(pl.Callback):
    """Records the labels of the labeled minibatch of every training step."""

    def __init__(self) -> None:
        self.labels: list[np.ndarray] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.labels.append(batch[1][REGISTRY_KEYS.LABELS_KEY].cpu().numpy().ravel())


@pytest.mark.parametrize(
    ("device_resident", "loader_cls"), [(False, AnnDataLoader), (True, ResidentLoader)]
)
def test_labeled_minibatches_on_the_host_and_the_device_resident_path(
    device_resident, loader_cls
) -> None:
    adata = labeled_data()
    model = SCANVI(adata)
    seen = _LabeledBatches()
    model.train(
        max_epochs=2,
        n_samples_per_label=20,
        device_resident=device_resident,
        callbacks=[seen],
        **TRAIN_KW,
    )
    loader = model.trainer.train_dataloader
    assert isinstance(loader, SemiSupervisedDataLoader)
    assert all(isinstance(part, loader_cls) for part in loader.dataloaders)
    unlabeled_code = model.n_labels
    for labels in seen.labels:
        # 20 cells of each of the two labels, never an unlabeled cell.
        assert np.bincount(labels.astype(int), minlength=3).tolist() == [20, 20, 0]
    assert unlabeled_code == 2 and len(model.history["train_accuracy"]) == 2


def test_every_cell_labeled() -> None:
    adata = labeled_data(unlabeled="asdf")
    model = SCANVI(adata)
    assert model.n_labels == 3 and model._unlabeled_indices.size == 0
    model.train(max_epochs=1, **TRAIN_KW)
    assert set(model.predict()) <= {"label_0", "label_1", "label_2"}
    assert list(model.predict(soft=True).columns) == ["label_0", "label_1", "label_2"]


def test_no_cell_labeled_trains_the_generative_model_alone() -> None:
    adata = cellvi.data.synthetic_iid(seed=0)
    # Known labels, none of them on a cell: the classifier has classes but no training data.
    adata.obs["labels"] = pd.Categorical(
        ["Unknown"] * adata.n_obs, categories=["B", "T", "Unknown"]
    )
    SCANVI.setup_anndata(adata, "labels", "Unknown")
    model = SCANVI(adata)
    assert model.n_labels == 2 and model._labeled_indices.size == 0
    model.train(max_epochs=1, **TRAIN_KW)
    assert "elbo_train" in model.history
    assert not any(f"train_{metric}" in model.history for metric in CLASSIFIER_METRICS)
    assert set(model.predict()) <= {"B", "T"}


def test_no_label_at_all_is_a_clear_error() -> None:
    adata = cellvi.data.synthetic_iid(seed=0)
    adata.obs["labels"] = "Unknown"
    SCANVI.setup_anndata(adata, "labels", "Unknown")
    with pytest.raises(ValueError, match="no label to learn"):
        SCANVI(adata)


def test_the_classifier_learns_the_labels_of_hidden_cells() -> None:
    cellvi.settings.seed = 0
    adata = cellvi.data.simulate(n_cells=600, n_genes=100, n_batches=2, n_cell_types=3, seed=1)
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    hidden = np.random.default_rng(0).random(adata.n_obs) < 0.8
    adata.obs["known"] = np.where(hidden, "Unknown", truth)
    SCANVI.setup_anndata(adata, "known", "Unknown", batch_key="batch")
    model = SCANVI(adata)
    model.train(max_epochs=15, **TRAIN_KW)
    accuracy = np.mean(model.predict(indices=np.flatnonzero(hidden)) == truth[hidden])
    assert accuracy > 0.9, accuracy


def test_from_scvi_model_keeps_every_scvi_weight() -> None:
    adata = cellvi.data.synthetic_iid(seed=0)
    SCVI.setup_anndata(adata, batch_key="batch")
    scvi_model = SCVI(adata, n_latent=6, use_observed_lib_size=False, dispersion="gene-batch")
    scvi_model.train(max_epochs=1, **TRAIN_KW)
    with pytest.warns(UserWarning, match="Ignoring param 'n_latent'"):
        model = SCANVI.from_scvi_model(scvi_model, "label_0", labels_key="labels", n_latent=3)
    assert model.was_pretrained and model.module.n_latent == 6 and model.n_labels == 2
    scanvi_weights = model.module.state_dict()
    for name, value in scvi_model.module.state_dict().items():
        assert torch.equal(scanvi_weights[name], value), name
        assert scanvi_weights[name].data_ptr() != value.data_ptr(), name
    assert model.init_params_["non_kwargs"]["dispersion"] == "gene-batch"
    before = {name: value.clone() for name, value in scvi_model.module.state_dict().items()}
    model.train(max_epochs=1, **TRAIN_KW)
    # SCANVI trains its own copy: the scVI model is untouched.
    assert not torch.equal(model.module.state_dict()["px_r"], before["px_r"])
    for name, value in scvi_model.module.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_from_scvi_model_on_other_data_and_its_errors() -> None:
    adata = cellvi.data.synthetic_iid(seed=0)
    SCVI.setup_anndata(adata, batch_key="batch")
    scvi_model = SCVI(adata)
    other = cellvi.data.synthetic_iid(seed=0)
    with pytest.raises(ValueError, match="labels_key is necessary"):
        SCANVI.from_scvi_model(scvi_model, "label_0", adata=other)
    with pytest.warns(UserWarning, match="hasn't been trained"):
        model = SCANVI.from_scvi_model(scvi_model, "label_0", labels_key="labels", adata=other)
    assert model.adata is other
    with pytest.raises(ValueError):
        SCANVI.from_scvi_model(
            scvi_model, "label_0", adata=cellvi.data.synthetic_iid(n_genes=50, seed=0)
        )


def test_the_default_epochs_are_fewer_after_scvi() -> None:
    adata = labeled_data()
    model = SCANVI(adata)
    model.was_pretrained = True
    model.train(**TRAIN_KW)
    # 400 cells: the heuristic's 400 epochs, a third of it, at most 10.
    assert model.trainer.max_epochs == 10


def test_save_and_load_give_the_same_predictions(tmp_path) -> None:
    adata = labeled_data()
    model = SCANVI(adata, linear_classifier=True)
    model.train(max_epochs=2, **TRAIN_KW)
    hard, soft = model.predict(), model.predict(soft=True)
    model.save(tmp_path / "m", save_anndata=True)
    for loaded in (
        SCANVI.load(tmp_path / "m", accelerator="cpu"),
        SCANVI.load(tmp_path / "m", adata=adata, accelerator="cpu"),
    ):
        np.testing.assert_array_equal(loaded.predict(), hard)
        pd.testing.assert_frame_equal(loaded.predict(soft=True), soft)
        assert loaded.is_trained_ and loaded.unlabeled_category_ == "label_0"
        assert "train_accuracy" in loaded.history


def _peer_test_directory(tmp_path: Path, name: str) -> Path:
    if not PEER_TESTS.exists():
        pytest.skip(f"{PEER_TESTS} is absent (../shared beside the project)")
    directory = tmp_path / name
    directory.mkdir()
    with tarfile.open(PEER_TESTS) as archive:
        for file in ("model.pt", "adata.h5ad"):
            member = archive.getmember(f"tests/test_data/{name}/{file}")
            (directory / file).write_bytes(archive.extractfile(member).read())
    return directory


def test_a_model_of_scvi_tools_before_1_1_keeps_its_probability_classifier(tmp_path) -> None:
    directory = _peer_test_directory(tmp_path, "pre_logits_fix_scanvi")
    model = SCANVI.load(directory, accelerator="cpu")
    assert not model.module.classifier.logits
    assert isinstance(model.module.classifier.classifier[-1], torch.nn.Softmax)
    soft = model.predict(soft=True)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-5)
    resaved = tmp_path / "resaved"
    model.save(resaved)
    again = SCANVI.load(resaved, adata=model.adata, accelerator="cpu")
    assert isinstance(again.module.classifier.classifier[-1], torch.nn.Softmax)
    pd.testing.assert_frame_equal(again.predict(soft=True), soft)


def test_bad_input_fails_clearly() -> None:
    adata = cellvi.data.synthetic_iid(seed=0)
    with pytest.raises(KeyError, match="no_such_column"):
        SCANVI.setup_anndata(adata, "no_such_column", "Unknown")
    with pytest.raises(ValueError, match="labels_key"):
        SCANVI.setup_anndata(adata, None, "Unknown")
    with pytest.raises(ValueError, match="unlabeled_category"):
        SCANVI.setup_anndata(adata, "labels", None)
    adata = labeled_data()
    with pytest.raises(ValueError, match="gene-label"):
        SCANVI(adata, dispersion="gene-label")
    model = SCANVI(adata)
    with pytest.raises(ValueError, match="adversarial_classifier"):
        model.train(max_epochs=1, adversarial_classifier=True, **TRAIN_KW)
    with pytest.raises(ValueError, match="n_classes"):
        model.train(max_epochs=1, plan_kwargs={"n_classes": 5}, **TRAIN_KW)
    with pytest.raises(TypeError, match="unknown argument"):
        model.train(max_epochs=1, plan_kwargs={"classification_ratoi": 5}, **TRAIN_KW)


def test_an_unlabeled_category_that_names_a_real_label_makes_its_cells_unlabeled() -> None:
    # label_1 is a cell type here; naming it unlabeled hides it: no class, never predicted.
    adata = labeled_data(unlabeled="label_1")
    model = SCANVI(adata)
    assert model.n_labels == 2
    assert model._unlabeled_indices.size == int((adata.obs["labels"] == "label_1").sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predicted = model.predict()
    assert "label_1" not in set(predicted)
    assert "label_1" not in model.predict(soft=True).columns


REFERENCE_PYTHON = ROOT / ".venv-scvi-tools" / "bin" / "python"
# Trains and saves an scvi-tools SCANVI with most options on, and its predictions.
_REFERENCE_SCRIPT = """
import sys, numpy as np, scvi
out = sys.argv[1]
scvi.settings.seed = 0
adata = scvi.data.synthetic_iid()
adata.obs["cont"] = np.linspace(-1, 1, adata.n_obs)
scvi.model.SCANVI.setup_anndata(
    adata, "labels", "label_0", batch_key="batch", continuous_covariate_keys=["cont"]
)
model = scvi.model.SCANVI(
    adata, n_latent=5, encode_covariates=True, dispersion="gene-batch",
    use_observed_lib_size=False, n_layers=2,
)
model.train(max_epochs=2, accelerator="cpu", enable_progress_bar=False)
model.save(out, save_anndata=True, overwrite=True)
np.save(out + "/soft.npy", model.predict(soft=True).to_numpy())
np.save(out + "/latent.npy", model.get_latent_representation())
"""


def test_a_model_trained_by_scvi_tools_predicts_the_same_in_cellvi(tmp_path) -> None:
    if not REFERENCE_PYTHON.exists():
        pytest.skip(f"no scvi-tools environment at {REFERENCE_PYTHON} (make bench-env)")
    out = tmp_path / "reference"
    subprocess.run(
        [str(REFERENCE_PYTHON), "-c", _REFERENCE_SCRIPT, str(out)], check=True, capture_output=True
    )
    model = SCANVI.load(out, accelerator="cpu")
    np.testing.assert_allclose(
        model.predict(soft=True).to_numpy(), np.load(out / "soft.npy"), atol=1e-5
    )
    np.testing.assert_allclose(
        model.get_latent_representation(), np.load(out / "latent.npy"), atol=1e-4
    )


def test_scanvi_answers_the_rna_queries_of_scvi() -> None:
    adata = labeled_data()
    cellvi.settings.seed = 0
    model = SCANVI(adata, n_latent=5)
    model.train(max_epochs=2, **TRAIN_KW)
    cellvi.settings.seed = None
    expression = model.get_normalized_expression(n_samples=2, return_mean=True)
    assert expression.shape == adata.shape and list(expression.columns) == list(adata.var_names)
    np.testing.assert_allclose(expression.sum(axis=1), 1.0, rtol=1e-4)
    de = model.differential_expression(groupby="labels", group1="label_1", group2="label_2")
    assert {"proba_m1", "proba_m2", "bayes_factor", "scale1", "scale2"} <= set(de.columns)
    assert set(de.index) == set(adata.var_names)
