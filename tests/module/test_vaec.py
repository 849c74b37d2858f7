"""VAEC: shapes, label conditioning, label-weighted loss, sampling, gradients and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellvi import REGISTRY_KEYS
from cellvi.module import VAEC

from ._inputs import N_BATCH, N_CELLS, N_GENES, N_LABELS, make_tensors

N_LATENT = 4


def make_vaec(**kwargs) -> VAEC:
    torch.manual_seed(0)
    return VAEC(N_GENES, n_labels=N_LABELS, n_hidden=16, n_latent=N_LATENT, **kwargs)


def test_inference_and_generative_shapes(tensors) -> None:
    module = make_vaec()
    x, y = tensors[REGISTRY_KEYS.X_KEY], tensors[REGISTRY_KEYS.LABELS_KEY]
    outputs = module.inference(x, y)
    assert outputs["qz"].loc.shape == outputs["z"].shape == (N_CELLS, N_LATENT)
    torch.testing.assert_close(outputs["library"], torch.log(x.sum(-1, keepdim=True)))
    px = module.generative(outputs["z"], outputs["library"], y)["px"]
    assert px.mu.shape == (N_CELLS, N_GENES)
    # The scale is a composition over genes, so the mean counts add up to the library size.
    torch.testing.assert_close(px.mu.sum(-1), x.sum(-1))

    drawn = module.inference(x, y, n_samples=3)
    assert drawn["z"].shape == (3, N_CELLS, N_LATENT)
    assert drawn["library"].shape == (3, N_CELLS, 1)
    px = module.generative(drawn["z"], drawn["library"], y)["px"]
    assert px.mu.shape == (3, N_CELLS, N_GENES)


def test_label_conditions_encoder_and_decoder(tensors) -> None:
    module = make_vaec().eval()  # no dropout: outputs are deterministic given z
    x, y = tensors[REGISTRY_KEYS.X_KEY], tensors[REGISTRY_KEYS.LABELS_KEY]
    other = (y + 1) % N_LABELS
    loc = module.inference(x, y)["qz"].loc
    assert not torch.allclose(loc, module.inference(x, other)["qz"].loc)
    z = torch.randn(N_CELLS, N_LATENT)
    library = torch.log(x.sum(-1, keepdim=True))
    mu = module.generative(z, library, y)["px"].mu
    assert torch.equal(mu, module.generative(z, library, y)["px"].mu)
    assert not torch.allclose(mu, module.generative(z, library, other)["px"].mu)


@pytest.mark.parametrize("kl_weight", [1.0, 0.3])
def test_loss_is_label_weighted_mean(tensors, kl_weight: float) -> None:
    weights = torch.tensor([0.5, 1.0, 2.0, 4.0])
    module = make_vaec(ct_weight=weights.numpy())
    outputs = module(tensors, loss_kwargs={"kl_weight": kl_weight})
    inference_outputs, generative_outputs, losses = outputs
    x = tensors[REGISTRY_KEYS.X_KEY]
    y = tensors[REGISTRY_KEYS.LABELS_KEY].long().ravel()
    reconstruction = -generative_outputs["px"].log_prob(x).sum(-1)
    kl = torch.distributions.kl_divergence(
        inference_outputs["qz"], torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    torch.testing.assert_close(losses.reconstruction_loss["reconstruction_loss"], reconstruction)
    torch.testing.assert_close(losses.kl_local["kl_divergence_z"], kl)
    expected = (weights[y] * (reconstruction + kl_weight * kl)).mean()
    torch.testing.assert_close(losses.loss, expected)
    # Unweighted per-cell terms: the reported ELBO does not depend on ct_weight.
    assert not torch.isclose(losses.loss, (reconstruction + kl_weight * kl).mean())


def test_default_weights_are_ones(tensors) -> None:
    module = make_vaec()
    assert torch.equal(module.ct_weight, torch.ones(N_LABELS))
    assert "ct_weight" in module.state_dict()  # saved and loaded with the weights


@pytest.mark.parametrize("n_samples", [1, 4])
def test_sample_shape(tensors, n_samples: int) -> None:
    draws = make_vaec().sample(tensors, n_samples=n_samples)
    assert draws.shape == (N_CELLS, N_GENES, n_samples)
    assert draws.device.type == "cpu"
    assert (draws >= 0).all() and torch.equal(draws, draws.round())


def test_gradients_reach_every_parameter(tensors) -> None:
    module = make_vaec(n_batch=N_BATCH, encode_covariates=True)
    module(tensors)[2].loss.backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_batch_embedding_reaches_decoder_only_by_default(tensors) -> None:
    module = make_vaec(n_batch=N_BATCH)
    assert module.batch_embedding is not None
    assert module.decoder.linears[0].n_in == N_LATENT + module.batch_embedding.embedding_dim
    assert module.z_encoder.encoder.linears[0].n_in == N_GENES
    assert torch.isfinite(module(tensors)[2].loss)


@pytest.mark.parametrize("ct_weight", [[1.0, 2.0], np.ones(N_LABELS + 1), torch.ones(1)])
def test_ct_weight_of_wrong_length(ct_weight) -> None:
    with pytest.raises(ValueError, match="ct_weight has .* entries"):
        make_vaec(ct_weight=ct_weight)


@pytest.mark.parametrize("ct_weight", [[1.0, -1.0, 1.0, 1.0], [1.0, float("nan"), 1.0, 1.0]])
def test_ct_weight_must_be_finite_non_negative(ct_weight) -> None:
    with pytest.raises(ValueError, match="finite, non-negative"):
        make_vaec(ct_weight=ct_weight)


@pytest.mark.parametrize("n_labels", [0, -1])
def test_needs_labels(n_labels: int) -> None:
    with pytest.raises(ValueError, match="n_labels >= 1"):
        VAEC(N_GENES, n_labels=n_labels)


def test_encode_covariates_needs_batches() -> None:
    with pytest.raises(ValueError, match="n_batch >= 1"):
        make_vaec(encode_covariates=True)


def test_a_single_batch_has_an_embedding_too() -> None:
    """As in scvi-tools 1.4: one batch still gets a (learnt, constant) embedding row."""
    module = make_vaec(n_batch=1, encode_covariates=True)
    assert module.batch_embedding.weight.shape == (1, 5)
    batch = make_tensors()
    batch.pop(REGISTRY_KEYS.BATCH_KEY, None)  # all cells of the single batch
    _, _, output = module(batch)
    output.loss.backward()
    assert module.batch_embedding.weight.grad.abs().sum() > 0


def test_the_fine_label_classifier_learns_only_from_known_fine_labels(tensors) -> None:
    module = make_vaec(n_fine_labels=3)
    batch = dict(tensors)
    fine = torch.arange(N_CELLS) % 4  # code 3 is the unlabeled category, kept last
    batch["fine_labels"] = fine[:, None]
    torch.manual_seed(1)
    _, _, output = module(batch)
    assert output.logits.shape == (N_CELLS, 3)
    assert output.classification_loss.dim() == 0 and output.classification_loss > 0
    # Five times the mean cross-entropy over the cells whose fine label is known.
    known = fine != 3
    expected = 5.0 * torch.nn.functional.cross_entropy(output.logits[known], fine[known])
    torch.testing.assert_close(output.classification_loss, expected)
    qz = module.inference(batch[REGISTRY_KEYS.X_KEY], batch[REGISTRY_KEYS.LABELS_KEY])["qz"]
    assert module.classify(qz.loc, batch[REGISTRY_KEYS.LABELS_KEY]).shape == (N_CELLS, 3)
    with pytest.raises(ValueError, match="no fine labels"):
        make_vaec().classify(qz.loc, batch[REGISTRY_KEYS.LABELS_KEY])


def test_a_mixture_prior_trains_its_components(tensors) -> None:
    module = make_vaec(prior="mog", num_classes_mog=4)
    _, _, output = module(tensors)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    for name in ("prior_means", "prior_log_std", "prior_logits"):
        assert getattr(module, name).grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="prior"):
        make_vaec(prior="vamp")
