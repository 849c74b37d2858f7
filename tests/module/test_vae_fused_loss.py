"""The VAE's reconstruction term uses the fused likelihood sums without changing the loss."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import kl_divergence

from cellvi import REGISTRY_KEYS
from cellvi.module import VAE

from ._inputs import BASE_KWARGS, make_tensors

OPTIONS = {
    "zinb-gene": {},
    "zinb-gene-batch": {"dispersion": "gene-batch"},
    "zinb-gene-label": {"dispersion": "gene-label"},
    "zinb-gene-cell": {"dispersion": "gene-cell"},
    "nb-gene": {"gene_likelihood": "nb"},
    "nb-gene-cell": {"gene_likelihood": "nb", "dispersion": "gene-cell"},
    "poisson": {"gene_likelihood": "poisson"},
}


@pytest.mark.parametrize("n_samples", [1, 3])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_loss_equals_exact_formula(name: str, n_samples: int) -> None:
    torch.manual_seed(0)
    module = VAE(**{**BASE_KWARGS, **OPTIONS[name]})
    tensors = make_tensors(n_cells=40)
    inference_outputs, generative_outputs = module(
        tensors, inference_kwargs={"n_samples": n_samples}, compute_loss=False
    )
    losses = module.loss(tensors, inference_outputs, generative_outputs)
    x = tensors[REGISTRY_KEYS.X_KEY]
    exact = -generative_outputs["px"].log_prob(x).sum(-1)
    reconstruction = losses.reconstruction_loss["reconstruction_loss"]
    assert reconstruction.shape == exact.shape
    torch.testing.assert_close(reconstruction, exact, rtol=1e-5, atol=1e-4)

    # Same graph, same parameters: the gradients of the two losses agree too.
    kl_z = kl_divergence(inference_outputs["qz"], generative_outputs["pz"]).sum(-1)
    exact_loss = torch.mean(exact + kl_z)
    params = [p for p in module.parameters() if p.requires_grad]
    fused_grads = torch.autograd.grad(losses.loss, params, retain_graph=True, allow_unused=True)
    exact_grads = torch.autograd.grad(exact_loss, params, allow_unused=True)
    for fused_grad, exact_grad in zip(fused_grads, exact_grads, strict=True):
        if exact_grad is None:
            assert fused_grad is None
            continue
        scale = exact_grad.abs().max().item()
        torch.testing.assert_close(fused_grad, exact_grad, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def test_marginal_ll_matches_exact_reconstruction() -> None:
    """marginal_ll through the fused sum equals a recomputation with log_prob."""
    torch.manual_seed(0)
    module = VAE(**BASE_KWARGS).eval()
    tensors = make_tensors(n_cells=16)
    x = tensors[REGISTRY_KEYS.X_KEY]
    torch.manual_seed(1)
    fused = module.marginal_ll(tensors, n_mc_samples=6, n_mc_samples_per_pass=3)
    torch.manual_seed(1)
    log_weights = []
    with torch.inference_mode():
        for _ in range(2):
            inference_outputs, generative_outputs = module(
                tensors, inference_kwargs={"n_samples": 3}, compute_loss=False
            )
            untran_z = inference_outputs["untran_z"]
            log_weights.append(
                generative_outputs["px"].log_prob(x).sum(-1)
                + torch.distributions.Normal(0.0, 1.0).log_prob(untran_z).sum(-1)
                - inference_outputs["qz"].log_prob(untran_z).sum(-1)
            )
        expected = torch.logsumexp(torch.cat(log_weights), 0) - torch.log(torch.tensor(6.0))
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-4)
