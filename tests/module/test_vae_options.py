"""Every VAE option: shapes, a finite loss, gradients to its parameters, and a real effect."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellvi import REGISTRY_KEYS
from cellvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from cellvi.module import VAE

from ._inputs import BASE_KWARGS, N_BATCH, N_CELLS, N_GENES, N_LABELS, make_tensors

LIBRARY_PRIOR = {
    "use_observed_lib_size": False,
    "library_log_means": np.full((1, N_BATCH), 3.0),
    "library_log_vars": np.ones((1, N_BATCH)),
}

OPTIONS = {
    "defaults": {},
    "gene-batch": {"dispersion": "gene-batch"},
    "gene-label": {"dispersion": "gene-label"},
    "gene-cell": {"dispersion": "gene-cell"},
    "nb": {"gene_likelihood": "nb"},
    "poisson": {"gene_likelihood": "poisson"},
    "normal": {"gene_likelihood": "normal"},
    "ln": {"latent_distribution": "ln"},
    "encode_covariates": {"encode_covariates": True},
    "shallow_injection": {"deeply_inject_covariates": False, "n_layers": 2},
    "deep_injection": {"deeply_inject_covariates": True, "n_layers": 2},
    "embedding": {"batch_representation": "embedding", "encode_covariates": True},
    "embedding_kwargs": {
        "batch_representation": "embedding",
        "batch_embedding_kwargs": {"embedding_dim": 3},
    },
    "batch_norm_encoder": {"use_batch_norm": "encoder"},
    "batch_norm_decoder": {"use_batch_norm": "decoder"},
    "batch_norm_none": {"use_batch_norm": "none"},
    "layer_norm_both": {"use_layer_norm": "both"},
    "size_factor": {"use_size_factor_key": True},
    "learned_library": LIBRARY_PRIOR,
    "learned_library_encoded": {**LIBRARY_PRIOR, "encode_covariates": True},
    "var_activation": {"var_activation": torch.nn.functional.softplus},
    "no_log_variational": {"log_variational": False},
    "extra_kwargs": {
        "extra_encoder_kwargs": {"activation_fn": torch.nn.LeakyReLU},
        "extra_decoder_kwargs": {"activation_fn": torch.nn.LeakyReLU},
    },
}


def build(**options) -> VAE:
    torch.manual_seed(0)
    return VAE(**{**BASE_KWARGS, **options})


@pytest.mark.parametrize("name", list(OPTIONS))
def test_option_runs_and_every_parameter_learns(name: str, tensors) -> None:
    module = build(**OPTIONS[name])
    inference_outputs, generative_outputs, losses = module(tensors)
    assert inference_outputs["z"].shape == (N_CELLS, BASE_KWARGS["n_latent"])
    assert inference_outputs["library"].shape == (N_CELLS, 1)
    assert generative_outputs["px"].mean.shape == (N_CELLS, N_GENES)
    assert losses.reconstruction_loss["reconstruction_loss"].shape == (N_CELLS,)
    assert torch.isfinite(losses.loss)
    losses.loss.backward()
    for parameter_name, parameter in module.named_parameters():
        assert parameter.grad is not None, f"{name}: no gradient reaches {parameter_name}"
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, f"{name}: zero gradient for {parameter_name}"


def test_deeply_inject_covariates_changes_which_layers_take_covariates() -> None:
    deep = build(n_layers=2, deeply_inject_covariates=True, encode_covariates=True)
    shallow = build(n_layers=2, deeply_inject_covariates=False, encode_covariates=True)
    assert deep.decoder.px_decoder.injected_layers == (0, 1)
    assert shallow.decoder.px_decoder.injected_layers == (0,)
    assert deep.z_encoder.encoder.injected_layers == (0, 1)
    assert shallow.z_encoder.encoder.injected_layers == (0,)
    assert shallow.decoder.px_decoder.covariate_widths(1) == ()
    assert deep.decoder.px_decoder.covariate_widths(1) == (N_BATCH, *BASE_KWARGS["n_cats_per_cov"])


def _posterior_mean(module: VAE, tensors) -> torch.Tensor:
    module.eval()
    return module.inference(**module._get_inference_input(tensors))["qz"].loc


@pytest.mark.parametrize("representation", ["one-hot", "embedding"])
def test_encode_covariates_makes_the_encoder_depend_on_batch(tensors, representation) -> None:
    other_batch = {
        **tensors,
        REGISTRY_KEYS.BATCH_KEY: (tensors[REGISTRY_KEYS.BATCH_KEY] + 1) % N_BATCH,
    }
    plain = build(batch_representation=representation)
    assert torch.equal(_posterior_mean(plain, tensors), _posterior_mean(plain, other_batch))
    encoded = build(encode_covariates=True, batch_representation=representation)
    assert not torch.allclose(
        _posterior_mean(encoded, tensors), _posterior_mean(encoded, other_batch)
    )


def _decode(module: VAE, tensors, **generative_kwargs):
    """Decode with a fixed posterior draw, so that two calls differ only by their inputs."""
    module.eval()
    torch.manual_seed(123)
    with torch.no_grad():
        inference_outputs = module.inference(**module._get_inference_input(tensors))
        inputs = module._get_generative_input(tensors, inference_outputs)
        return module.generative(**{**inputs, **generative_kwargs})["px"]


def test_the_decoder_always_depends_on_batch(tensors) -> None:
    module = build()
    px = _decode(module, tensors, transform_batch=0)
    px_other = _decode(module, tensors, transform_batch=1)
    assert not torch.allclose(px.mean, px_other.mean)


def test_transform_batch_equals_recoding_every_cell(tensors) -> None:
    module = build()
    recoded = {
        **tensors,
        REGISTRY_KEYS.BATCH_KEY: torch.full_like(tensors[REGISTRY_KEYS.BATCH_KEY], 2),
    }
    torch.testing.assert_close(
        _decode(module, tensors, transform_batch=2).mean, _decode(module, recoded).mean
    )


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("transform_batch", [None, 1])
def test_decode_expression_is_what_px_holds(name: str, transform_batch, tensors) -> None:
    """The expression-only decoding gives generative's px scale and mean, for every option."""
    module = build(**OPTIONS[name])
    module.eval()
    torch.manual_seed(123)
    with torch.no_grad():
        inputs = module._get_generative_input(
            tensors, module.inference(**module._get_inference_input(tensors))
        )
        px = module.generative(**inputs, transform_batch=transform_batch)["px"]
        scale, mu = (
            module.decode_expression(inputs, transform_batch=transform_batch, key=key)
            for key in ("scale", "mu")
        )
    counts_model = isinstance(px, NegativeBinomial)  # ZINB too, a subclass
    mean = px.mu if counts_model else px.mean  # a Poisson's rate, a normal's location
    torch.testing.assert_close(mu, mean)
    if counts_model:
        torch.testing.assert_close(scale, px.scale)
    elif module.use_size_factor_key:
        torch.testing.assert_close(scale, mean / tensors[REGISTRY_KEYS.SIZE_FACTOR_KEY])
    else:
        torch.testing.assert_close(scale, mean / mean.sum(-1, keepdim=True))


def test_gene_batch_dispersion_is_looked_up_by_batch(tensors) -> None:
    module = build(dispersion="gene-batch", gene_likelihood="nb")
    px = _decode(module, tensors)
    batch = tensors[REGISTRY_KEYS.BATCH_KEY].ravel()
    torch.testing.assert_close(px.theta, torch.exp(module.px_r[batch]))
    assert module.px_r.shape == (N_BATCH, N_GENES)


def test_gene_label_dispersion_is_looked_up_by_label(tensors) -> None:
    module = build(dispersion="gene-label", gene_likelihood="nb")
    px = _decode(module, tensors)
    labels = tensors[REGISTRY_KEYS.LABELS_KEY].ravel()
    torch.testing.assert_close(px.theta, torch.exp(module.px_r[labels]))
    assert module.px_r.shape == (N_LABELS, N_GENES)


def test_gene_cell_dispersion_comes_from_the_decoder(tensors) -> None:
    module = build(dispersion="gene-cell", gene_likelihood="nb")
    assert module.px_r is None
    theta = _decode(module, tensors).theta
    assert theta.shape == (N_CELLS, N_GENES)
    assert not torch.allclose(theta[0], theta[1])


@pytest.mark.parametrize(
    ("likelihood", "kind"),
    [
        ("zinb", ZeroInflatedNegativeBinomial),
        ("nb", NegativeBinomial),
        ("poisson", torch.distributions.Poisson),
        ("normal", torch.distributions.Normal),
    ],
)
def test_gene_likelihood_sets_the_distribution(tensors, likelihood, kind) -> None:
    px = _decode(build(gene_likelihood=likelihood), tensors)
    assert type(px) is kind


def test_logistic_normal_latent_lies_on_the_simplex(tensors) -> None:
    z = build(latent_distribution="ln").inference(**build()._get_inference_input(tensors))["z"]
    torch.testing.assert_close(z.sum(-1), torch.ones(N_CELLS))
    assert (z > 0).all()


def test_size_factor_scales_the_mean(tensors) -> None:
    module = build(use_size_factor_key=True, gene_likelihood="nb")
    doubled = {
        **tensors,
        REGISTRY_KEYS.SIZE_FACTOR_KEY: tensors[REGISTRY_KEYS.SIZE_FACTOR_KEY] * 2,
    }
    torch.testing.assert_close(_decode(module, doubled).mean, 2 * _decode(module, tensors).mean)


def test_observed_library_is_the_log_total(tensors) -> None:
    module = build()
    library = module.inference(**module._get_inference_input(tensors))["library"]
    torch.testing.assert_close(library, tensors[REGISTRY_KEYS.X_KEY].sum(1, keepdim=True).log())
    assert module.l_encoder is None


def test_learned_library_has_a_per_batch_prior(tensors) -> None:
    means = np.array([[1.0, 2.0, 3.0]])
    module = build(
        use_observed_lib_size=False, library_log_means=means, library_log_vars=np.ones((1, 3))
    )
    assert module.l_encoder is not None
    module.eval()
    outputs = module.inference(**module._get_inference_input(tensors))
    pl = module.generative(**module._get_generative_input(tensors, outputs))["pl"]
    batch = tensors[REGISTRY_KEYS.BATCH_KEY].ravel()
    torch.testing.assert_close(
        pl.loc.ravel(), torch.as_tensor(means[0, batch.numpy()], dtype=torch.float32)
    )
    losses = module(tensors)[2]
    assert (losses.kl_local["kl_divergence_l"] > 0).all()


def test_var_activation_is_used(tensors) -> None:
    module = build(var_activation=lambda raw: torch.full_like(raw, 0.25))
    qz = module.inference(**module._get_inference_input(tensors))["qz"]
    torch.testing.assert_close(qz.scale.square(), torch.full_like(qz.scale, 0.25 + 1e-4))


def test_batch_norm_and_layer_norm_placement() -> None:
    def count(module: torch.nn.Module, kind: type) -> int:
        return sum(isinstance(child, kind) for child in module.modules())

    for option, (in_encoder, in_decoder) in {
        "both": (True, True),
        "encoder": (True, False),
        "decoder": (False, True),
        "none": (False, False),
    }.items():
        batch_norm = build(use_batch_norm=option)
        assert (count(batch_norm.z_encoder, torch.nn.BatchNorm1d) > 0) == in_encoder
        assert (count(batch_norm.decoder, torch.nn.BatchNorm1d) > 0) == in_decoder
        layer_norm = build(use_layer_norm=option)
        assert (count(layer_norm.z_encoder, torch.nn.LayerNorm) > 0) == in_encoder
        assert (count(layer_norm.decoder, torch.nn.LayerNorm) > 0) == in_decoder


def test_embedding_widens_the_decoder_input() -> None:
    module = build(batch_representation="embedding", batch_embedding_kwargs={"embedding_dim": 7})
    assert module.batch_embedding.embedding_dim == 7
    first = module.decoder.px_decoder.linears[0]
    assert first.n_in == BASE_KWARGS["n_latent"] + BASE_KWARGS["n_continuous_cov"] + 7
    assert first.n_cat_list == tuple(BASE_KWARGS["n_cats_per_cov"])  # batch is not one-hot


def test_log_variational_changes_the_encoder_input(tensors) -> None:
    torch.manual_seed(0)
    logged = _posterior_mean(build(log_variational=True), tensors)
    raw = _posterior_mean(build(log_variational=False), tensors)
    assert not torch.allclose(logged, raw)


def test_module_without_covariate_tensors_uses_one_batch() -> None:
    module = VAE(n_input=N_GENES, n_hidden=8, n_latent=2)
    tensors = {REGISTRY_KEYS.X_KEY: make_tensors()[REGISTRY_KEYS.X_KEY]}
    assert torch.isfinite(module(tensors)[2].loss)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dispersion": "gene-gene"}, "dispersion='gene-gene'.*gene-batch"),
        ({"gene_likelihood": "zip"}, "gene_likelihood='zip'.*zinb"),
        ({"latent_distribution": "gamma"}, "latent_distribution='gamma'.*'ln'"),
        ({"batch_representation": "onehot"}, "batch_representation='onehot'.*embedding"),
        ({"use_batch_norm": True}, "use_batch_norm=True.*encoder"),
        ({"use_layer_norm": "all"}, "use_layer_norm='all'.*both"),
        ({"dispersion": "gene-label", "n_labels": 0}, "gene-label.*n_labels"),
        ({"dispersion": "gene-batch", "n_batch": 0}, "gene-batch.*n_batch"),
        ({"use_observed_lib_size": False}, "library_log_means and library_log_vars"),
        (
            {
                "use_observed_lib_size": False,
                "library_log_means": np.zeros((1, 2)),
                "library_log_vars": np.ones((1, 3)),
            },
            r"library_log_means must have shape \(1, n_batch\) = \(1, 3\)",
        ),
        (
            {
                "use_observed_lib_size": False,
                "library_log_means": np.zeros((1, 3)),
                "library_log_vars": np.zeros((1, 3)),
            },
            "library_log_vars positive",
        ),
    ],
)
def test_bad_options_fail_at_construction(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        VAE(**{**BASE_KWARGS, **options})


def test_wrong_number_of_categorical_covariates_is_a_clear_error(tensors) -> None:
    module = build()
    bad = {**tensors, REGISTRY_KEYS.CAT_COVS_KEY: tensors[REGISTRY_KEYS.CAT_COVS_KEY][:, :1]}
    with pytest.raises(ValueError, match="built for 2 categorical covariates"):
        module(bad)


def test_sample_shapes(tensors) -> None:
    module = build().eval()
    assert module.sample(tensors).shape == (N_CELLS, N_GENES)
    draws = module.sample(tensors, n_samples=3)
    assert draws.shape == (N_CELLS, N_GENES, 3)
    assert draws.device.type == "cpu"
    assert (draws >= 0).all() and torch.equal(draws, draws.round())
    poisson = build(gene_likelihood="poisson").eval()
    assert poisson.sample(tensors, n_samples=2, max_poisson_rate=1.0).max() < 20
