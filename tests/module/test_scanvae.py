"""SCANVAE: the labelled latent prior, the classifier and its loss, and loading old files."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical, Normal, kl_divergence

from cellvi import REGISTRY_KEYS
from cellvi.module import SCANVAE, VAE

from ._inputs import N_GENES, make_tensors

N_LABELS = 3


def _mean(self: Normal, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
    return self.loc.expand(self._extended_shape(sample_shape))


@pytest.fixture
def draws_are_means(monkeypatch):
    """Make every reparameterised draw the distribution's mean, so losses are deterministic."""
    monkeypatch.setattr(Normal, "rsample", _mean)


def scanvae(**kwargs) -> SCANVAE:
    torch.manual_seed(0)
    module = SCANVAE(n_input=N_GENES, n_batch=3, n_labels=N_LABELS, n_latent=4, **kwargs)
    return module.eval()


def labelled(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    cells = {key: value[:10] for key, value in tensors.items()}
    cells[REGISTRY_KEYS.LABELS_KEY] = torch.arange(10).remainder(N_LABELS)[:, None]
    return cells


def reference_loss(module: SCANVAE, tensors, inference, generative) -> torch.Tensor:
    """The scANVI loss per cell, written label by label (no broadcasting tricks)."""
    z1, qz1 = inference["z"], inference["qz"]
    log_probs = torch.log_softmax(module.classifier(z1), dim=-1)
    per_cell = -generative["px"].log_prob(tensors[REGISTRY_KEYS.X_KEY]).sum(-1)
    per_cell = per_cell + qz1.log_prob(z1).sum(-1)
    for label in range(N_LABELS):
        codes = torch.full((z1.shape[0],), label)
        qz2, z2 = module.encoder_z2_z1(z1, codes)
        mean, variance = module.decoder_z1_z2(z2, codes)
        nll_z1 = -Normal(mean, variance.sqrt()).log_prob(z1).sum(-1)
        kl_z2 = kl_divergence(qz2, Normal(0.0, 1.0)).sum(-1)
        per_cell = per_cell + log_probs[:, label].exp() * (nll_z1 + kl_z2)
    prior = Categorical(probs=torch.full((N_LABELS,), 1 / N_LABELS))
    return per_cell + kl_divergence(Categorical(logits=log_probs), prior)


def test_the_loss_sums_the_unobserved_label_out(draws_are_means) -> None:
    module, tensors = scanvae(), make_tensors()
    with torch.no_grad():
        inference, generative, output = module(tensors)
        expected = reference_loss(module, tensors, inference, generative)
    per_cell = output.reconstruction_loss["reconstruction_loss"] + sum(output.kl_local.values())
    torch.testing.assert_close(per_cell, expected, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(output.loss, expected.mean(), rtol=1e-5, atol=1e-3)


def test_labelled_cells_add_the_weighted_cross_entropy(draws_are_means) -> None:
    module, tensors = scanvae(), make_tensors()
    cells = labelled(tensors)
    with torch.no_grad():
        plain = module(tensors)[2]
        output = module(
            tensors, loss_kwargs={"labelled_tensors": cells, "classification_ratio": 7}
        )
        logits = module.classify(**module._get_inference_input(cells))
    expected_ce = torch.nn.functional.cross_entropy(logits, cells[REGISTRY_KEYS.LABELS_KEY][:, 0])
    torch.testing.assert_close(output[2].classification_loss, expected_ce)
    torch.testing.assert_close(output[2].loss, plain.loss + 7 * expected_ce)
    assert output[2].logits.shape == (10, N_LABELS)
    assert torch.equal(output[2].true_labels, cells[REGISTRY_KEYS.LABELS_KEY])
    with pytest.raises(ValueError, match="classification_ratio"):
        module(tensors, loss_kwargs={"labelled_tensors": cells})


@pytest.mark.parametrize("n_samples", [1, 3])
def test_several_posterior_samples_give_per_sample_terms(n_samples: int) -> None:
    module, tensors = scanvae(), make_tensors()
    with torch.no_grad():
        _, _, output = module(tensors, inference_kwargs={"n_samples": n_samples})
    shape = (tensors[REGISTRY_KEYS.X_KEY].shape[0],)
    shape = shape if n_samples == 1 else (n_samples, *shape)
    assert output.reconstruction_loss["reconstruction_loss"].shape == shape
    assert output.kl_local["kl_divergence_z"].shape == shape
    assert torch.isfinite(output.loss)


def test_one_label_has_no_label_kl() -> None:
    module = SCANVAE(n_input=N_GENES, n_labels=1).eval()
    tensors = make_tensors()
    with torch.no_grad():
        inference, _, output = module(tensors)
        qz2, _ = module.encoder_z2_z1(inference["z"], torch.zeros(len(inference["z"])))
    # With a single label q(y | z1) = y_prior: only the z2 KL remains.
    kl_z2 = kl_divergence(qz2, Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(output.kl_local["kl_divergence_z"], kl_z2, rtol=1e-5, atol=1e-5)


def test_its_outputs_are_the_vaes_so_vae_queries_read_it() -> None:
    module, vae, tensors = scanvae(), VAE(n_input=N_GENES, n_batch=3, n_latent=4), make_tensors()
    inference, generative = module(tensors, compute_loss=False)
    vae_inference, vae_generative = vae(tensors, compute_loss=False)
    assert inference.keys() == vae_inference.keys()
    assert generative.keys() == vae_generative.keys()


def test_classify_uses_the_posterior_mean_unless_asked_for_a_draw() -> None:
    module, tensors = scanvae(), make_tensors()
    inputs = module._get_inference_input(tensors)
    with torch.no_grad():
        first, second = module.classify(**inputs), module.classify(**inputs)
        drawn = module.classify(**inputs, use_posterior_mean=False)
        from_mean = module.classifier(module.inference(**inputs)["qz"].loc)
    assert torch.equal(first, second) and torch.equal(first, from_mean)
    assert not torch.equal(first, drawn)


def test_a_probability_classifier_keeps_a_proper_cross_entropy() -> None:
    module, tensors = scanvae(classifier_parameters={"logits": False}), make_tensors()
    cells = labelled(tensors)
    assert isinstance(module.classifier.classifier[-1], torch.nn.Softmax)
    with torch.no_grad():
        probabilities = module.classify(**module._get_inference_input(cells))
        loss, _, logits = module.classification_loss(cells)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(10))
    expected = -probabilities.log()[torch.arange(10), cells[REGISTRY_KEYS.LABELS_KEY][:, 0]]
    torch.testing.assert_close(loss, expected.mean())
    torch.testing.assert_close(logits.exp(), probabilities)


def test_a_linear_classifier_is_one_layer_of_the_latent() -> None:
    module = scanvae(linear_classifier=True)
    assert len(module.classifier.classifier) == 1
    layer = module.classifier.classifier[0]
    assert isinstance(layer, torch.nn.Linear)
    assert (layer.in_features, layer.out_features) == (4, N_LABELS)


def test_the_label_prior_is_fixed_and_saved() -> None:
    module = scanvae(y_prior=torch.tensor([[0.2, 0.3, 0.5]]))
    assert "y_prior" in module.state_dict()
    assert all(p is not module.y_prior for p in module.parameters())
    torch.testing.assert_close(module.y_prior, torch.tensor([[0.2, 0.3, 0.5]]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_labels": 0}, "at least one label"),
        ({"dispersion": "gene-label"}, "gene-label"),
        ({"use_labels_groups": True}, "use_labels_groups"),
        ({"y_prior": torch.ones(1, 2) / 2}, "y_prior"),
    ],
)
def test_unsupported_options_fail_clearly(kwargs, message) -> None:
    options = {"n_input": N_GENES, "n_labels": N_LABELS, **kwargs}
    with pytest.raises(ValueError, match=message):
        SCANVAE(**options)


@pytest.mark.parametrize(
    ("registry", "softmax_added"),
    [({"scvi_version": "1.0.3"}, True), ({"scvi_version": "1.4.2"}, False), ({}, False)],
)
def test_models_of_scvi_tools_before_1_1_keep_their_softmax(registry, softmax_added) -> None:
    module = scanvae()
    module.on_load(module.state_dict(), registry, make_tensors())
    assert module.classifier.logits is not softmax_added
    assert isinstance(module.classifier.classifier[-1], torch.nn.Softmax) is softmax_added
