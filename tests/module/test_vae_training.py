"""The VAE as a statistical model: marginal likelihood estimates and plain-torch training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellvi import REGISTRY_KEYS
from cellvi.data import simulate
from cellvi.module import VAE

from ._inputs import BASE_KWARGS, make_tensors


def _per_cell_elbo(module: VAE, tensors, n_draws: int) -> torch.Tensor:
    """Monte Carlo ELBO per cell (no KL warm-up), averaged over ``n_draws`` draws."""
    draws = []
    with torch.no_grad():
        for _ in range(n_draws):
            losses = module(tensors)[2]
            draws.append(
                -(
                    losses.reconstruction_loss["reconstruction_loss"]
                    + sum(losses.kl_local.values())
                )
            )
    return torch.stack(draws).mean(0)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "use_observed_lib_size": False,
            "library_log_means": np.full((1, 3), 4.0),
            "library_log_vars": np.ones((1, 3)),
        },
        {"latent_distribution": "ln"},
    ],
)
def test_marginal_ll_is_at_least_the_elbo(options) -> None:
    torch.manual_seed(0)
    module = VAE(**{**BASE_KWARGS, **options}).eval()
    tensors = make_tensors(n_cells=64)
    elbo = _per_cell_elbo(module, tensors, n_draws=50)
    marginal = module.marginal_ll(tensors, n_mc_samples=200, n_mc_samples_per_pass=50)
    assert marginal.shape == (64,)
    # Jensen: E[log mean_k w_k] >= E[log w] = ELBO for each cell; allow MC noise per cell,
    # and require the bound on average.
    assert marginal.mean() > elbo.mean()
    assert (marginal > elbo - 0.5).float().mean() > 0.95


def test_marginal_ll_converges_as_samples_grow() -> None:
    torch.manual_seed(1)
    module = VAE(**BASE_KWARGS).eval()
    tensors = make_tensors(n_cells=32)
    reference = module.marginal_ll(tensors, n_mc_samples=4000, n_mc_samples_per_pass=500)
    errors = {}
    for n in (5, 50, 500):
        estimates = torch.stack(
            [
                module.marginal_ll(tensors, n_mc_samples=n, n_mc_samples_per_pass=n)
                for _ in range(5)
            ]
        )
        errors[n] = (estimates - reference).abs().mean().item()
    assert errors[500] < errors[50] < errors[5]
    # The estimate is a stochastic lower bound: more samples can only raise it on average.
    few = torch.stack([module.marginal_ll(tensors, n_mc_samples=5) for _ in range(10)]).mean(0)
    assert few.mean() < reference.mean()


def test_marginal_ll_return_mean_and_passes() -> None:
    module = VAE(**BASE_KWARGS).eval()
    tensors = make_tensors()
    torch.manual_seed(0)
    value = module.marginal_ll(tensors, n_mc_samples=20, return_mean=True, n_mc_samples_per_pass=7)
    assert isinstance(value, float) and np.isfinite(value)
    with pytest.raises(ValueError, match="n_mc_samples"):
        module.marginal_ll(tensors, n_mc_samples=0)


def _minibatches(adata, indices: np.ndarray, batch_size: int):
    counts = adata.X
    batch_codes = adata.obs["batch"].cat.codes.to_numpy()
    for start in range(0, len(indices), batch_size):
        rows = np.sort(indices[start : start + batch_size])
        yield {
            REGISTRY_KEYS.X_KEY: torch.as_tensor(counts[rows].toarray()),
            REGISTRY_KEYS.BATCH_KEY: torch.as_tensor(batch_codes[rows], dtype=torch.long)[:, None],
        }


def test_module_trains_alone_in_a_plain_torch_loop() -> None:
    """No model class, no Lightning: a user's loop over simulate() data improves the ELBO."""
    adata = simulate(n_cells=1_200, n_genes=200, n_batches=2, n_cell_types=4, seed=3)
    generator = np.random.default_rng(0)
    order = generator.permutation(adata.n_obs)
    train, held_out = order[:1_000], order[1_000:]
    torch.manual_seed(0)
    module = VAE(n_input=adata.n_vars, n_batch=2, n_latent=8)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)

    def held_out_elbo() -> float:
        module.eval()
        with torch.no_grad():
            totals = [
                module(tensors)[2].elbo_sum.item()
                for tensors in _minibatches(adata, held_out, 200)
            ]
        module.train()
        return -sum(totals) / len(held_out)

    before = held_out_elbo()
    for _ in range(15):
        for tensors in _minibatches(adata, generator.permutation(train), 128):
            loss = module(tensors)[2].loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = held_out_elbo()
    # The ELBO is a (negative) per-cell log-likelihood bound; an untrained decoder is far off.
    assert after > before + 0.2 * abs(before), (before, after)
