"""The built-in ``cellvi.model.SCVI``: setup, construction, training and posterior queries."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import cellvi
from cellvi import REGISTRY_KEYS
from cellvi.model import SCVI

from ._model_helpers import BATCHES, TRAIN_KW, train_scvi


def _adata():
    adata = cellvi.data.synthetic_iid()
    SCVI.setup_anndata(adata, batch_key="batch")
    return adata


def _seen_by_training(model, **train_kwargs) -> dict:
    """Train one epoch, recording the batch codes and module modes the training steps saw."""
    seen = {"codes": set(), "module_training": set()}

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["codes"] |= set(batch[REGISTRY_KEYS.BATCH_KEY].ravel().tolist())
            seen["module_training"].add(pl_module.module.training)

    model.train(max_epochs=1, callbacks=[Spy()], **TRAIN_KW, **train_kwargs)
    return seen


def _elbo_by_hand(model, indices) -> float:
    """Mean per-cell ELBO, -(reconstruction + local KL), from the module's forward pass."""
    total, n = 0.0, 0
    with torch.inference_mode():
        for tensors in model._make_dataloader(indices=indices):
            _, _, losses = model.module(tensors)
            total -= float(losses.reconstruction_loss_sum + losses.kl_local_sum)
            n += losses.n_obs_minibatch
    return total / n


# ---- setup_anndata and construction ---------------------------------------------------------


def test_setup_with_every_argument_sizes_the_module():
    rng = np.random.default_rng(0)
    adata = cellvi.data.synthetic_iid()
    counts = adata.X.copy()
    adata.layers["counts"] = counts
    adata.X = -counts  # not counts: training must read the layer
    adata.obs["size_factor"] = rng.uniform(0.5, 2.0, adata.n_obs)
    adata.obs["donor"] = rng.choice(["d1", "d2", "d3"], adata.n_obs)
    adata.obs["site"] = rng.choice(["s1", "s2", "s3", "s4"], adata.n_obs)
    adata.obs["age"] = rng.normal(size=adata.n_obs)
    adata.obs["dose"] = rng.normal(size=adata.n_obs)
    SCVI.setup_anndata(
        adata,
        layer="counts",
        batch_key="batch",
        labels_key="labels",
        size_factor_key="size_factor",
        categorical_covariate_keys=["donor", "site"],
        continuous_covariate_keys=["age", "dose"],
    )
    model = SCVI(adata, n_hidden=16)
    module = model.module
    assert module.n_input == 100
    assert module.n_batch == 2
    assert module.n_labels == 3
    assert module.n_cats_per_cov == [3, 4]
    assert module.n_continuous_cov == 2
    assert module.use_size_factor_key is True
    assert model.summary_stats["n_extra_continuous_covs"] == 2
    setup_args = model.adata_manager.registry["setup_args"]
    assert setup_args["layer"] == "counts"
    assert setup_args["categorical_covariate_keys"] == ["donor", "site"]

    batch = next(iter(model._make_dataloader(indices=np.arange(5))))
    np.testing.assert_array_equal(batch[REGISTRY_KEYS.X_KEY].numpy(), counts[:5])
    np.testing.assert_allclose(
        batch[REGISTRY_KEYS.SIZE_FACTOR_KEY].numpy().ravel(), adata.obs["size_factor"][:5]
    )
    assert batch[REGISTRY_KEYS.CAT_COVS_KEY].shape == (5, 2)
    assert batch[REGISTRY_KEYS.CONT_COVS_KEY].shape == (5, 2)
    model.train(max_epochs=1, **TRAIN_KW)
    assert np.isfinite(model.history_["elbo_train"].to_numpy()).all()
    assert model.get_latent_representation().shape == (400, 10)


def test_setup_defaults_give_one_batch_and_one_label():
    adata = cellvi.data.synthetic_iid()
    SCVI.setup_anndata(adata)
    module = SCVI(adata).module
    assert (module.n_batch, module.n_labels) == (1, 1)
    assert module.n_cats_per_cov == [] and module.n_continuous_cov == 0
    assert module.use_size_factor_key is False and module.use_observed_lib_size is True


def test_model_kwargs_are_forwarded_to_the_vae():
    adata = _adata()
    model = SCVI(
        adata,
        n_hidden=16,
        n_latent=3,
        n_layers=2,
        dropout_rate=0.3,
        dispersion="gene-batch",
        gene_likelihood="nb",
        latent_distribution="ln",
        log_variational=False,
    )
    module = model.module
    assert module.n_latent == 3
    assert module.dispersion == "gene-batch" and module.px_r.shape == (2, 100)
    assert module.gene_likelihood == "nb"
    assert module.latent_distribution == "ln"
    assert module.log_variational is False
    assert len(module.z_encoder.encoder.linears) == 2
    assert module.z_encoder.mean_encoder.in_features == 16
    assert module.z_encoder.mean_encoder.out_features == 3
    rates = {m.p for m in module.z_encoder.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {0.3}
    # scvi-tools' layout: named arguments, and the **model_kwargs apart.
    assert model.init_params_ == {
        "non_kwargs": {
            "n_hidden": 16,
            "n_latent": 3,
            "n_layers": 2,
            "dropout_rate": 0.3,
            "dispersion": "gene-batch",
            "gene_likelihood": "nb",
            "use_observed_lib_size": True,
            "latent_distribution": "ln",
        },
        "kwargs": {"model_kwargs": {"log_variational": False}},
    }
    assert SCVI(adata, gene_likelihood="poisson").module.px_r is None
    with pytest.raises(ValueError, match="dispersion"):
        SCVI(adata, dispersion="per-cell")


def test_library_prior_estimated_from_data_when_library_is_modelled():
    adata = _adata()
    model = SCVI(adata, use_observed_lib_size=False)
    module = model.module
    assert module.use_observed_lib_size is False and module.l_encoder is not None
    log_totals = np.log(adata.X.sum(axis=1))
    expected_means = [log_totals[BATCHES == b].mean() for b in (0, 1)]
    expected_vars = [log_totals[BATCHES == b].var() for b in (0, 1)]
    np.testing.assert_allclose(module.library_log_means.numpy().ravel(), expected_means, rtol=1e-5)
    np.testing.assert_allclose(module.library_log_vars.numpy().ravel(), expected_vars, rtol=1e-4)
    model.train(max_epochs=1, **TRAIN_KW)
    assert np.isfinite(model.get_elbo(indices=np.arange(30)))
    # Observed library (the default): no library encoder, no prior buffers.
    assert SCVI(adata).module.l_encoder is None


@pytest.mark.parametrize("encode_covariates", [False, True])
def test_encode_covariates_feeds_the_batch_to_the_encoder(encode_covariates):
    adata = _adata()
    module = SCVI(adata, encode_covariates=encode_covariates).module.eval()
    x = torch.as_tensor(adata.X[:10])
    with torch.inference_mode():
        q0 = module.inference(x, batch_index=torch.zeros(10, 1))["qz"].loc
        q1 = module.inference(x, batch_index=torch.ones(10, 1))["qz"].loc
    assert module.encode_covariates is encode_covariates
    assert torch.equal(q0, q1) is not encode_covariates


# ---- training ----------------------------------------------------------------------------


def test_training_records_history_indices_and_status(trained):
    model, _ = trained
    assert model.is_trained_ and model.is_trained
    history = model.history_
    for key in (
        "elbo_train",
        "elbo_validation",
        "reconstruction_loss_train",
        "kl_local_train",
        "train_loss",
        "validation_loss",
        "kl_weight",
    ):
        assert key in history, key
        assert list(history[key].index) == [0, 1, 2], key
    elbo = history["elbo_train"]["elbo_train"].to_numpy()
    assert elbo[-1] < elbo[0]
    train, valid, test = model.train_indices, model.validation_indices, model.test_indices
    assert (train.size, valid.size, test.size) == (360, 20, 20)
    every = np.concatenate([train, valid, test])
    assert np.unique(every).size == 400 and every.min() == 0 and every.max() == 399


def test_training_on_simulated_counts():
    cellvi.settings.seed = 0
    adata = cellvi.data.simulate(n_cells=300, n_genes=60, n_batches=3, n_cell_types=3, seed=1)
    SCVI.setup_anndata(adata, batch_key="batch", labels_key="cell_type")
    model = SCVI(adata, n_hidden=32, n_latent=4, dispersion="gene-label")
    assert (model.module.n_batch, model.module.n_labels) == (3, 3)
    model.train(max_epochs=3, batch_size=100, **TRAIN_KW)
    elbo = model.history_["elbo_train"]["elbo_train"].to_numpy()
    assert elbo.shape == (3,) and elbo[-1] < elbo[0]
    latent = model.get_latent_representation()
    assert latent.shape == (300, 4) and np.isfinite(latent).all()
    assert np.isfinite(model.get_elbo(indices=model.validation_indices))


def test_sparse_counts_query_like_dense(trained):
    model, _ = trained
    sparse = cellvi.data.synthetic_iid(sparse_format="csr_matrix", seed=0)
    SCVI.setup_anndata(sparse, batch_key="batch")
    np.testing.assert_allclose(
        model.get_latent_representation(sparse),
        model.get_latent_representation(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_train_with_load_sparse_tensor():
    sparse = cellvi.data.synthetic_iid(sparse_format="csr_matrix")
    SCVI.setup_anndata(sparse, batch_key="batch")
    model = SCVI(sparse, n_hidden=16)
    model.train(max_epochs=1, load_sparse_tensor=True, **TRAIN_KW)
    assert np.isfinite(model.history_["elbo_train"].to_numpy()).all()


def test_repr_mentions_parameters_and_training_status(trained):
    model = SCVI(_adata(), n_hidden=20, n_latent=7, gene_likelihood="nb")
    text = repr(model)
    for part in ("n_hidden: 20", "n_latent: 7", "gene_likelihood: nb", "dispersion: gene"):
        assert part in text
    assert text.endswith("Training status: Not Trained")
    assert repr(trained[0]).endswith("Training status: Trained")


def test_same_seed_same_latents():
    first, _ = train_scvi(seed=0, max_epochs=1, n_hidden=32)
    second, _ = train_scvi(seed=0, max_epochs=1, n_hidden=32)
    other, _ = train_scvi(seed=1, max_epochs=1, n_hidden=32)
    np.testing.assert_array_equal(first.train_indices, second.train_indices)
    np.testing.assert_array_equal(first.history_["elbo_train"], second.history_["elbo_train"])
    np.testing.assert_array_equal(
        first.get_latent_representation(), second.get_latent_representation()
    )
    assert not np.array_equal(first.train_indices, other.train_indices)
    assert not np.allclose(first.get_latent_representation(), other.get_latent_representation())
    assert cellvi.settings.seed is None


def test_early_stopping_stops_before_max_epochs():
    cellvi.settings.seed = 0
    model = SCVI(_adata())
    # Nothing counts as an improvement: stop once patience (1 epoch) runs out.
    model.train(
        max_epochs=10,
        early_stopping=True,
        early_stopping_patience=1,
        early_stopping_min_delta=1e6,
        **TRAIN_KW,
    )
    assert len(model.history_["elbo_validation"]) == 2
    assert model.is_trained_
    # Patient enough: early stopping on but all epochs run.
    model.train(max_epochs=2, early_stopping=True, **TRAIN_KW)
    assert len(model.history_["elbo_train"]) == 2 + 2  # the second train() appends
    with pytest.raises(ValueError, match="validation"):
        model.train(max_epochs=2, early_stopping=True, train_size=1.0, **TRAIN_KW)


def test_plan_kwargs_are_forwarded():
    model = SCVI(_adata())
    model.train(max_epochs=3, plan_kwargs={"lr": 0.0123, "n_epochs_kl_warmup": 2}, **TRAIN_KW)
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0123)
    kl_weight = model.history_["kl_weight"]["kl_weight"].to_numpy()
    np.testing.assert_allclose(kl_weight, [0.0, 0.5, 1.0])
    model.train(max_epochs=1, plan_kwargs={"n_epochs_kl_warmup": None}, **TRAIN_KW)
    np.testing.assert_allclose(model.history_["kl_weight"]["kl_weight"], [0.0, 0.5, 1.0, 1.0])


def test_train_and_validation_sizes_are_respected():
    model = SCVI(_adata())
    model.train(max_epochs=1, train_size=0.5, validation_size=0.25, **TRAIN_KW)
    sizes = (model.train_indices.size, model.validation_indices.size, model.test_indices.size)
    assert sizes == (200, 100, 100)
    assert not np.array_equal(np.sort(model.train_indices), np.arange(200))  # shuffled
    model.train(
        max_epochs=1,
        train_size=0.7,
        shuffle_set_split=False,
        check_val_every_n_epoch=1,
        **TRAIN_KW,
    )
    # In cell order, validation comes first, as in scvi-tools.
    np.testing.assert_array_equal(model.validation_indices, np.arange(120))
    np.testing.assert_array_equal(model.train_indices, np.arange(120, 400))
    assert model.test_indices.size == 0
    assert "elbo_validation" in model.history_


def test_training_reads_the_models_own_registration_after_interleaving():
    """Another model's setup of the same AnnData must not change what this model trains on."""
    adata = _adata()
    model = SCVI(adata)
    SCVI.setup_anndata(adata, batch_key=None)
    SCVI(adata)
    assert (adata.obs["_scvi_batch"] == 0).all()
    seen = _seen_by_training(model)
    assert seen["codes"] == {0, 1}
    np.testing.assert_array_equal(adata.obs["_scvi_batch"].to_numpy(), BATCHES)


def test_every_training_call_trains_in_training_mode():
    """Dropout and batch norm are live in every train() call, not only the first."""
    model = SCVI(_adata())
    assert _seen_by_training(model)["module_training"] == {True}
    assert not model.module.training  # left in eval mode for queries
    assert _seen_by_training(model)["module_training"] == {True}


# ---- queries -----------------------------------------------------------------------------


def test_get_elbo_is_the_mean_per_cell_elbo_and_improves_with_training(trained):
    model, adata = trained
    cells = model.validation_indices
    torch.manual_seed(0)
    elbo = model.get_elbo(indices=cells)
    torch.manual_seed(0)
    by_hand = _elbo_by_hand(model, cells)
    # As in scvi-tools: a 0-d tensor (one per cell with return_mean=False).
    assert isinstance(elbo, torch.Tensor) and elbo.ndim == 0 and torch.isfinite(elbo)
    assert float(elbo) == pytest.approx(by_hand, rel=1e-5)

    cellvi.settings.seed = 0
    untrained = SCVI(adata)
    untrained.module.eval()
    torch.manual_seed(0)
    assert _elbo_by_hand(untrained, cells) < elbo - 1.0


def test_get_marginal_ll_shapes_and_bound(trained):
    model, _ = trained
    cells = np.arange(0, 400, 8)
    torch.manual_seed(0)
    per_cell = model.get_marginal_ll(
        indices=cells, n_mc_samples=40, n_mc_samples_per_pass=8, return_mean=False
    )
    assert per_cell.shape == (50,) and np.isfinite(per_cell).all()
    torch.manual_seed(0)
    mean = model.get_marginal_ll(indices=cells, n_mc_samples=40, n_mc_samples_per_pass=40)
    assert isinstance(mean, float)
    assert mean == pytest.approx(per_cell.mean(), abs=1.0)
    torch.manual_seed(0)
    assert per_cell.mean() >= model.get_elbo(indices=cells)
    with pytest.raises(ValueError):
        model.get_marginal_ll(indices=cells, n_mc_samples=0)


def test_get_reconstruction_error_is_bounded_by_the_negative_elbo(trained):
    model, _ = trained
    torch.manual_seed(0)
    error = model.get_reconstruction_error()
    assert set(error) == {"reconstruction_loss"}
    assert 0 < error["reconstruction_loss"] < np.inf
    torch.manual_seed(0)
    negative_elbo = -model.get_elbo()
    # Same draws: -ELBO = reconstruction + KL, and the KL is positive.
    assert error["reconstruction_loss"] < negative_elbo


def test_get_latent_representation_options(trained):
    model, _ = trained
    latent = model.get_latent_representation()
    assert latent.shape == (400, 10) and latent.dtype == np.float32
    np.testing.assert_array_equal(model.get_latent_representation(), latent)  # deterministic
    sampled = model.get_latent_representation(give_mean=False)
    assert sampled.shape == latent.shape and not np.allclose(sampled, latent)
    cells = np.array([399, 0, 17, 256])
    np.testing.assert_allclose(
        model.get_latent_representation(indices=cells), latent[cells], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        model.get_latent_representation(batch_size=7), latent, rtol=1e-5, atol=1e-6
    )
    means, variances = model.get_latent_representation(return_dist=True)
    np.testing.assert_allclose(means, latent, rtol=1e-6, atol=1e-7)
    assert variances.shape == (400, 10) and (variances > 0).all()
    spread = sampled - latent
    assert 0.8 < np.mean(spread**2) / np.mean(variances) < 1.25  # draws match the variances


def test_latent_of_new_anndata_with_a_subset_of_batches(trained):
    model, _ = trained
    latent = model.get_latent_representation()
    new = cellvi.data.synthetic_iid(seed=0)[200:].copy()  # batch_1 cells only
    new.obs["batch"] = new.obs["batch"].cat.remove_unused_categories()
    assert list(new.obs["batch"].cat.categories) == ["batch_1"]
    transferred = model.get_latent_representation(new)
    assert (new.obs["_scvi_batch"] == 1).all()  # the training code of batch_1, not 0
    np.testing.assert_allclose(transferred, latent[200:], rtol=1e-5, atol=1e-6)
    assert model.get_anndata_manager(new).summary_stats["n_batch"] == 2


def test_logistic_normal_latent_lies_on_the_simplex():
    cellvi.settings.seed = 0
    model = SCVI(_adata(), n_latent=5, latent_distribution="ln")
    model.train(max_epochs=1, **TRAIN_KW)
    latent = model.get_latent_representation(mc_samples=64)
    assert latent.shape == (400, 5)
    assert (latent > 0).all() and (latent < 1).all()
    np.testing.assert_allclose(latent.sum(axis=1), 1.0, atol=1e-5)
    sample = model.get_latent_representation(give_mean=False)
    np.testing.assert_allclose(sample.sum(axis=1), 1.0, atol=1e-5)
    assert np.isfinite(model.get_marginal_ll(indices=np.arange(10), n_mc_samples=5))


def test_queries_read_a_dataloader_of_your_own_instead_of_adata(trained):
    model, adata = trained
    loader = model._make_data_loader(adata=adata, indices=np.arange(50), batch_size=16)
    assert model.get_latent_representation(dataloader=loader).shape == (50, 10)
    torch.manual_seed(0)
    per_cell = model.get_elbo(dataloader=loader, return_mean=False)
    assert per_cell.shape == (50,)
    errors = model.get_reconstruction_error(dataloader=loader, return_mean=False)
    assert errors["reconstruction_loss"].shape == (50,)
    assert model.get_marginal_ll(dataloader=loader, n_mc_samples=2, return_mean=False).shape == (
        50,
    )
    with pytest.raises(ValueError, match="either adata or a dataloader"):
        model.get_elbo(adata=adata, dataloader=loader)
    with pytest.raises(ValueError, match="build it over the cells"):
        model.get_latent_representation(dataloader=loader, indices=[0, 1])


def test_latent_of_a_module_that_returns_posterior_moments(trained):
    """Older modules return ``qzm``/``qzv`` instead of ``qz``; the query reads either."""
    model, _ = trained
    expected = model.get_latent_representation()
    original = model.module.inference

    def moments_only(*args, **kwargs):
        outputs = dict(original(*args, **kwargs))
        qz = outputs.pop("qz")
        return {**outputs, "qzm": qz.loc, "qzv": qz.scale**2}

    model.module.inference = moments_only
    try:
        np.testing.assert_allclose(model.get_latent_representation(), expected, rtol=1e-6)
    finally:
        del model.module.inference
