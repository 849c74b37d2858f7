"""SCANVI reference mapping: which weights a query trains under each freeze option.

scvi-tools 1.4.2's semantics: the library encoder trains whole, the classifier too unless
``freeze_classifier``; the label hierarchy (``encoder_z2_z1``, ``decoder_z1_z2``) is frozen but
for its batch norms, which follow the encoder and decoder options; the new batch's covariate
weights train. Every other reference weight, and the running statistics of every frozen batch
norm (a frozen classifier's included), must be bit-identical after query training.
"""

from __future__ import annotations

import pytest
import torch

import cellvi
from cellvi.model import SCANVI

from ._model_helpers import TRAIN_KW
from .test_arches import _reference_part, _trains

UNLABELED = "Unknown"


def _data(batches: list[str], seed: int):
    adata = cellvi.data.synthetic_iid(batch_size=60, n_genes=30, n_batches=len(batches), seed=seed)
    adata.obs["batch"] = adata.obs["batch"].cat.rename_categories(batches)
    return adata


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A trained reference SCANVI (learnt library size: the library encoder exists)."""
    cellvi.settings.seed = 0
    adata = _data(["b0", "b1"], seed=0)
    SCANVI.setup_anndata(adata, "labels", UNLABELED, batch_key="batch")
    model = SCANVI(
        adata,
        n_hidden=16,
        n_latent=4,
        n_layers=2,
        use_observed_lib_size=False,
        encode_covariates=True,
    )
    model.train(max_epochs=2, **TRAIN_KW)
    cellvi.settings.seed = None
    directory = tmp_path_factory.mktemp("scanvi-reference")
    model.save(directory)
    return model, directory


OPTIONS = [
    {},
    {"freeze_classifier": False},
    {"freeze_batchnorm_encoder": False},
    {"freeze_batchnorm_decoder": True},
    {"freeze_expression": False, "freeze_decoder_first_layer": False},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda options: str(options) or "defaults")
def test_each_freeze_option_trains_only_what_it_leaves_free(reference, options):
    model, directory = reference
    before = {name: tensor.clone() for name, tensor in model.module.state_dict().items()}
    query = _data(["b2"], seed=1)
    query.obs["labels"] = UNLABELED
    mapped = SCANVI.load_query_data(query, directory, accelerator="cpu", **options)
    loaded = {name: tensor.clone() for name, tensor in mapped.module.state_dict().items()}
    mapped.train(max_epochs=2, **TRAIN_KW)
    after = mapped.module.state_dict()
    for name, old in before.items():
        if not _trains(name, options) and not name.endswith("num_batches_tracked"):
            part = _reference_part(after[name], old)
            assert torch.equal(part, old), f"{name} changed under {options}"
    moved = {
        name
        for name, tensor in loaded.items()
        if not torch.equal(after[name], tensor) and not name.endswith("num_batches_tracked")
    }
    # The new batch's covariate weights trained, in the encoder and in the decoder.
    assert "z_encoder.encoder.linears.0.cat_weights.0" in moved
    assert "decoder.px_decoder.linears.1.cat_weights.0" in moved
    classifier_moved = any(name.startswith("classifier.") for name in moved)
    assert classifier_moved == (not options.get("freeze_classifier", True))


def test_unfrozen_trains_the_reference_weights_too(reference):
    model, directory = reference
    query = _data(["b2"], seed=1)
    query.obs["labels"] = UNLABELED
    mapped = SCANVI.load_query_data(query, directory, accelerator="cpu", unfrozen=True)
    assert all(parameter.requires_grad for parameter in mapped.module.parameters())
    mapped.train(max_epochs=1, **TRAIN_KW)
    for name in ("z_encoder.encoder.linears.0.weight", "classifier.classifier.1.weight"):
        assert not torch.equal(mapped.module.state_dict()[name], model.module.state_dict()[name])


def test_a_label_seen_only_in_the_query_is_refused_and_unlabeled_cells_map(reference):
    # As scvi-tools: labels are never extended for a query (the classifier has no class for
    # them); the query's cells of a new type are mapped unlabeled, and predicted.
    model, directory = reference
    query = _data(["b2"], seed=3)
    labels = query.obs["labels"].astype(str).to_numpy()
    labels[:5] = "a_new_type"
    query.obs["labels"] = labels
    with pytest.raises(ValueError, match="a_new_type"):
        SCANVI.load_query_data(query, directory, accelerator="cpu")
    labels[:5] = UNLABELED
    query.obs["labels"] = labels
    mapped = SCANVI.load_query_data(query, directory, accelerator="cpu")
    assert mapped.n_labels == model.n_labels
    mapped.train(max_epochs=1, **TRAIN_KW)
    assert set(mapped.predict()) <= set(model.adata.obs["labels"].astype(str)) - {UNLABELED}
