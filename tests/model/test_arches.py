"""Reference mapping (scArches): the query trains only its new weights, the reference's stay.

A reference SCVI is trained on two batches (with a categorical and a continuous covariate,
covariates in the encoder, a learnt library size so the library encoder exists) and saved;
queries bring two new batches and a new category. After query training with the default
optimizer (Adam with weight decay) every weight each freeze option freezes must be
bit-identical to the reference's, and the new categories' weights must have moved. As in
scvi-tools, the weights of a reference category that query cells hold train on those cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import cellvi
from cellvi.model import SCVI, CondSCVI

from ._model_helpers import TRAIN_KW

N_GENES = 40
REFERENCE_KW = {
    "n_hidden": 16,
    "n_latent": 4,
    "n_layers": 2,
    "encode_covariates": True,
    "use_observed_lib_size": False,
}


def _data(batches: list[str], donors: list[str], seed: int, n_genes: int = N_GENES):
    adata = cellvi.data.synthetic_iid(batch_size=60, n_genes=n_genes, n_batches=len(batches))
    adata.obs["batch"] = adata.obs["batch"].cat.rename_categories(batches)
    rng = np.random.default_rng(seed)
    adata.obs["donor"] = rng.choice(donors, size=adata.n_obs)
    adata.obs["mito"] = rng.random(adata.n_obs)
    return adata


def _setup(adata) -> None:
    SCVI.setup_anndata(
        adata,
        batch_key="batch",
        categorical_covariate_keys=["donor"],
        continuous_covariate_keys=["mito"],
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A trained reference SCVI, its AnnData and the directory it is saved in."""
    cellvi.settings.seed = 0
    adata = _data(["b0", "b1"], ["a", "b"], seed=0)
    _setup(adata)
    model = SCVI(adata, **REFERENCE_KW)
    model.train(max_epochs=2, **TRAIN_KW)
    cellvi.settings.seed = None
    directory = tmp_path_factory.mktemp("reference")
    model.save(directory)
    return model, adata, directory


def _query():
    """Two new batches and a new donor: nothing of the reference's is used by the query."""
    return _data(["b2", "b3"], ["c"], seed=1)


def _reference_part(tensor: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return tensor[tuple(slice(0, size) for size in reference.shape)]


def _trains(name: str, options: dict) -> bool:
    """Whether ``options`` leave the reference part of tensor ``name`` trainable.

    The library encoder trains whole, a classifier (SCANVI's) unless ``freeze_classifier``;
    batch norms follow the encoder or decoder option of the top-level module holding them.
    """
    top = name.split(".")[0]
    if top == "l_encoder":
        return True
    if top == "classifier":
        return not options.get("freeze_classifier", True)
    if ".transforms." in name:  # batch norm
        if "encoder" in top:
            return not options.get("freeze_batchnorm_encoder", True)
        return not options.get("freeze_batchnorm_decoder", False)
    if name.startswith("z_encoder.encoder.linears.0."):
        return not options.get("freeze_expression", True)
    if name.startswith("decoder.px_decoder.linears.0."):
        return not options.get("freeze_decoder_first_layer", True)
    return False


OPTIONS = [
    {},
    {"freeze_expression": False},
    {"freeze_decoder_first_layer": False},
    {"freeze_batchnorm_encoder": False},
    {"freeze_batchnorm_decoder": True},
    {"freeze_dropout": True},
    {"freeze_classifier": False},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda options: str(options) or "defaults")
def test_every_freeze_option_keeps_the_reference_weights_bit_identical(reference, options):
    model, _, directory = reference
    before = model.module.state_dict()
    query = SCVI.load_query_data(_query(), directory, accelerator="cpu", **options)
    assert not query.is_trained_
    query.train(max_epochs=2, **TRAIN_KW)
    after = query.module.state_dict()
    assert set(after) == set(before)  # saved as one tensor per weight, like any model
    moved = []
    for name, old in before.items():
        if name.endswith("num_batches_tracked"):
            continue
        part = _reference_part(after[name], old)
        if _trains(name, options):
            continue
        assert torch.equal(part, old), f"{name} changed under {options}"
        if not torch.equal(part, after[name]):
            moved.append(name)
    # The new categories' rows (two batches, one donor) trained, in encoder and decoder.
    assert "decoder.px_decoder.linears.1.cat_weights.0" in moved
    assert "z_encoder.encoder.linears.1.cat_weights.1" in moved
    dropouts = [
        m.p
        for name, m in query.module.named_modules()
        if isinstance(m, torch.nn.Dropout) and not name.startswith("l_encoder")
    ]
    assert dropouts and all((p == 0) == bool(options.get("freeze_dropout")) for p in dropouts)


def test_frozen_rows_survive_adamw_and_a_large_weight_decay(reference):
    model, _, directory = reference
    query = SCVI.load_query_data(_query(), directory, accelerator="cpu")
    plan = {"optimizer": "AdamW", "weight_decay": 0.5, "lr": 0.05}
    query.train(max_epochs=2, plan_kwargs=plan, **TRAIN_KW)
    old = model.module.state_dict()["decoder.px_decoder.linears.1.cat_weights.0"]
    new = query.module.state_dict()["decoder.px_decoder.linears.1.cat_weights.0"]
    assert torch.equal(new[:2], old) and not torch.equal(new[2:], torch.zeros_like(new[2:]))


def test_unfrozen_trains_every_weight(reference):
    model, _, directory = reference
    query = SCVI.load_query_data(_query(), directory, accelerator="cpu", unfrozen=True)
    assert all(p.requires_grad for p in query.module.parameters())
    query.train(max_epochs=1, **TRAIN_KW)
    name = "z_encoder.encoder.linears.0.weight"
    assert not torch.equal(query.module.state_dict()[name], model.module.state_dict()[name])


def test_new_categories_extend_the_codes_and_reference_cells_keep_their_latent(reference):
    model, adata, directory = reference
    query_adata = _query()
    query = SCVI.load_query_data(query_adata, directory, accelerator="cpu")
    registry = query.registry_["field_registries"]
    assert registry["batch"]["state_registry"]["categorical_mapping"] == ["b0", "b1", "b2", "b3"]
    covariates = registry["extra_categorical_covs"]["state_registry"]
    assert covariates["mappings"]["donor"] == ["a", "b", "c"]
    assert set(query_adata.obsm["_scvi_extra_categorical_covs"]["donor"]) == {2}
    assert covariates["n_cats_per_key"] == [3]
    assert set(query_adata.obs["_scvi_batch"].unique()) == {2, 3}
    assert query.summary_stats.n_batch == 4
    # The encoder of reference cells is frozen whole (batch norm statistics too), so after
    # query training they still have the reference's posterior, exactly.
    query.train(max_epochs=2, **TRAIN_KW)
    expected = model.get_latent_representation(adata)
    np.testing.assert_array_equal(query.get_latent_representation(adata), expected)
    # The library prior grew: the reference's batches first, the query's after.
    means = query.module.library_log_means
    assert means.shape == (1, 4) and torch.equal(means[:, :2], model.module.library_log_means)


def test_the_query_model_saves_and_loads_as_any_model(reference, tmp_path):
    _, _, directory = reference
    query_adata = _query()
    query = SCVI.load_query_data(query_adata, directory, accelerator="cpu")
    query.train(max_epochs=1, **TRAIN_KW)
    query.save(tmp_path / "query")
    loaded = SCVI.load(tmp_path / "query", adata=query_adata, accelerator="cpu")
    saved = query.module.state_dict()
    for name, tensor in loaded.module.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    # The same numbers, but for rounding: the mapped model adds its new rows apart.
    np.testing.assert_allclose(
        loaded.get_latent_representation(), query.get_latent_representation(), atol=1e-6
    )
    # A mapped query is a reference in its turn, and its frozen rows load back split.
    query.module.load_state_dict(loaded.module.state_dict())
    assert torch.equal(
        query.module.state_dict()["decoder.px_decoder.linears.0.cat_weights.0"],
        saved["decoder.px_decoder.linears.0.cat_weights.0"],
    )
    again = SCVI.load_query_data(_data(["b9"] * 1, ["a"], seed=3), query, accelerator="cpu")
    assert again.summary_stats.n_batch == 5


def test_batch_embeddings_grow_and_only_the_new_rows_train(tmp_path):
    cellvi.settings.seed = 0
    adata = _data(["b0", "b1"], ["a"], seed=0)
    SCVI.setup_anndata(adata, batch_key="batch")
    model = SCVI(adata, n_hidden=16, n_latent=4, batch_representation="embedding")
    model.train(max_epochs=1, **TRAIN_KW)
    query = SCVI.load_query_data(_query(), model, accelerator="cpu")
    query.train(max_epochs=2, **TRAIN_KW)
    old = model.module.state_dict()["_embeddings_dict.batch.weight"]
    new = query.module.state_dict()["_embeddings_dict.batch.weight"]
    assert new.shape == (4, old.shape[1]) and torch.equal(new[:2], old)
    assert query.get_batch_representation().shape == (120, old.shape[1])
    fresh = SCVI.load_query_data(_query(), model, accelerator="cpu").module.state_dict()
    assert not torch.equal(new[2:], fresh["_embeddings_dict.batch.weight"][2:])


def test_reference_categories_the_query_holds_train_and_the_others_stay(reference):
    model, _, directory = reference
    mixed = _data(["b1", "b7"], ["b"], seed=2)
    query = SCVI.load_query_data(mixed, directory, accelerator="cpu")
    mapping = query.registry_["field_registries"]["batch"]["state_registry"]
    assert mapping["categorical_mapping"] == ["b0", "b1", "b7"]
    assert set(mixed.obs["_scvi_batch"].unique()) == {1, 2}
    query.train(max_epochs=2, **TRAIN_KW)
    for name in (
        "decoder.px_decoder.linears.0.cat_weights",
        "z_encoder.encoder.linears.1.cat_weights",
    ):
        old, new = model.module.state_dict()[f"{name}.0"], query.module.state_dict()[f"{name}.0"]
        assert torch.equal(new[0], old[0])  # batch b0: no query cell
        assert not torch.equal(new[1], old[1])  # batch b1: query cells teach it, as in scvi-tools
        assert not torch.equal(
            new[2], query.module.decoder.px_decoder.linears[0].cat_weights[0][2]
        )
        donors_old = model.module.state_dict()[f"{name}.1"]
        donors_new = query.module.state_dict()[f"{name}.1"]
        assert torch.equal(donors_new[0], donors_old[0])  # donor a: no query cell
        assert not torch.equal(donors_new[1], donors_old[1])


def test_fewer_categories_keep_the_reference_codes(reference):
    _, _, directory = reference
    query_adata = _data(["b2"], ["b"], seed=4)
    query = SCVI.load_query_data(query_adata, directory, accelerator="cpu")
    covariates = query.registry_["field_registries"]["extra_categorical_covs"]
    assert covariates["state_registry"]["n_cats_per_key"] == [2]
    assert (query_adata.obsm["_scvi_extra_categorical_covs"]["donor"] == 1).all()


# Genes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [False, True])
def test_prepare_pads_missing_genes_with_zeros_and_reorders(reference, sparse):
    model, adata, directory = reference
    query = cellvi.data.synthetic_iid(batch_size=30, n_genes=N_GENES + 10, n_batches=1)
    query.var_names = [f"other_{i}" for i in range(5)] + list(query.var_names[5:])
    rng = np.random.default_rng(0)
    query = query[:, rng.permutation(query.n_vars)].copy()
    if sparse:
        query.X = sp.csr_matrix(query.X)
    query.layers["counts"] = query.X.copy()
    query.raw = query.copy()
    original = query.copy()
    prepared = SCVI.prepare_query_anndata(query, directory, inplace=False)
    assert list(query.var_names) == list(original.var_names)  # left alone
    assert list(prepared.var_names) == list(adata.var_names)
    assert sp.issparse(prepared.X) == sparse
    for gene in adata.var_names:
        for matrix, source in (
            (prepared.X, original.X),
            (prepared.layers["counts"], original.layers["counts"]),
        ):
            column = _column(matrix, prepared.var_names.get_loc(gene))
            if gene in original.var_names:
                np.testing.assert_array_equal(
                    column, _column(source, original.var_names.get_loc(gene))
                )
            else:
                assert not column.any()
    assert SCVI.prepare_query_anndata(query, model) is None  # in place, from a model
    assert list(query.var_names) == list(adata.var_names)
    np.testing.assert_array_equal(_dense(query.X), _dense(prepared.X))
    assert list(query.raw.var_names) == list(original.var_names)  # raw kept whole
    names = SCVI.prepare_query_anndata(query, directory, return_reference_var_names=True)
    assert isinstance(names, pd.Index) and list(names) == list(adata.var_names)


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def _column(matrix, index: int) -> np.ndarray:
    return _dense(matrix[:, [index]]).ravel()


def test_few_shared_genes_warn_and_none_is_an_error(reference):
    _, adata, directory = reference
    few = cellvi.data.synthetic_iid(batch_size=10, n_genes=N_GENES, n_batches=1)
    few.var_names = [f"x{i}" if i >= 10 else name for i, name in enumerate(few.var_names)]
    with pytest.warns(UserWarning, match="25%"):
        SCVI.prepare_query_anndata(few, directory)
    none = cellvi.data.synthetic_iid(batch_size=10, n_genes=N_GENES, n_batches=1)
    none.var_names = [f"x{i}" for i in range(N_GENES)]
    with pytest.raises(ValueError, match="shares no gene"):
        SCVI.prepare_query_anndata(none, directory)
    with pytest.raises(ValueError, match="prepare_query_anndata"):
        SCVI.load_query_data(none, directory, accelerator="cpu")


def test_subsetting_in_place_needs_every_reference_gene(reference):
    _, adata, directory = reference
    wider = _data(["b2"], ["a"], seed=5, n_genes=N_GENES + 5)
    query = SCVI.load_query_data(
        wider, directory, inplace_subset_query_vars=True, accelerator="cpu"
    )
    assert list(wider.var_names) == list(adata.var_names) and query.adata is wider
    narrower = _data(["b2"], ["a"], seed=5, n_genes=N_GENES - 5)
    with pytest.raises(ValueError, match="lacks 5 reference genes"):
        SCVI.load_query_data(narrower, directory, inplace_subset_query_vars=True)


# Bad input ------------------------------------------------------------------------------


def test_a_missing_covariate_column_is_a_key_error(reference):
    _, _, directory = reference
    query = _query()
    del query.obs["donor"]
    with pytest.raises(KeyError, match="donor"):
        SCVI.load_query_data(query, directory, accelerator="cpu")


def test_a_reference_of_another_class_is_refused(reference, tmp_path):
    model, _, directory = reference
    adata = cellvi.data.synthetic_iid(batch_size=30, n_genes=N_GENES, n_labels=2)
    CondSCVI.setup_anndata(adata, labels_key="labels")
    other = CondSCVI(adata, n_hidden=8, n_latent=2)
    other.save(tmp_path / "condscvi")
    with pytest.raises(ValueError, match="CondSCVI.load_query_data"):
        SCVI.load_query_data(adata.copy(), tmp_path / "condscvi")
    with pytest.raises(ValueError, match="CondSCVI.load_query_data"):
        SCVI.load_query_data(adata.copy(), other)
    with pytest.raises(ValueError, match="SCVI model"):
        CondSCVI.load_query_data(_query(), directory)


def test_a_covariate_the_reference_had_one_category_of_cannot_be_extended():
    adata = _data(["b0"], ["a"], seed=0)
    SCVI.setup_anndata(adata, batch_key="batch")
    model = SCVI(adata, n_hidden=8, n_latent=2)
    with pytest.raises(ValueError, match="single category"):
        SCVI.load_query_data(_query(), model, accelerator="cpu")
    with pytest.raises(ValueError, match="missing from the reference"):
        SCVI.load_query_data(_query(), model, transfer_batch=False)


def test_condscvi_maps_new_batches_onto_its_embedding():
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid(batch_size=60, n_genes=N_GENES, n_batches=2, n_labels=3)
    CondSCVI.setup_anndata(adata, labels_key="labels", batch_key="batch")
    model = CondSCVI(adata, n_hidden=16, n_latent=3)
    model.train(max_epochs=1, **TRAIN_KW)
    query_adata = cellvi.data.synthetic_iid(
        batch_size=60, n_genes=N_GENES, n_batches=1, n_labels=3
    )
    query_adata.obs["batch"] = query_adata.obs["batch"].cat.rename_categories(["new"])
    query = CondSCVI.load_query_data(query_adata, model, accelerator="cpu")
    query.train(max_epochs=2, **TRAIN_KW)
    before, after = model.module.state_dict(), query.module.state_dict()
    for name, old in before.items():
        # The label tables train on the query's cells (their labels are the reference's).
        kept = not _trains(name, {}) and ".cat_weights." not in name
        if kept and not name.endswith("num_batches_tracked"):
            assert torch.equal(_reference_part(after[name], old), old), name
    new_row = after["_embeddings_dict.batch.weight"][2]
    fresh = CondSCVI.load_query_data(query_adata.copy(), model).module.state_dict()
    assert not torch.equal(new_row, fresh["_embeddings_dict.batch.weight"][2])
