"""Forward + backward time of the count log-likelihood, and of a whole VAE training step.

    .venv/bin/python benchmarks/likelihood_speed.py [--repeats 30] [--threads 1]

On one minibatch of ``--cells`` x ``--genes`` simulated counts (about 35% nonzero, with
realistic per-gene means and dispersions) it times, per cell summed over genes:

- ``exact``: ``log_zinb_positive(...).sum(-1)`` / ``log_nb_positive``, through autograd;
- ``textbook``: the plain ``lgamma`` formulation, as scvi-tools computes it;
- ``fused``: ``zinb_log_likelihood_sum`` / ``nb_log_likelihood_sum``.

and then one optimisation step of the default ZINB ``VAE`` with each as the reconstruction
term. Variants are interleaved within each repetition so that background load hits them
alike; times are CPU-time medians in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import kl_divergence

from cellvi import REGISTRY_KEYS
from cellvi.distributions import (
    log_nb_positive,
    log_zinb_positive,
    nb_log_likelihood_sum,
    zinb_log_likelihood_sum,
)
from cellvi.module import VAE


def textbook_log_nb(x: Tensor, mu: Tensor, theta: Tensor, eps: float = 1e-8) -> Tensor:
    """Elementwise NB log-pmf written with three ``lgamma`` calls (scvi-tools' approach)."""
    log_theta_mu = torch.log(theta + mu + eps)
    return (
        theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


def textbook_log_zinb(
    x: Tensor, mu: Tensor, theta: Tensor, zi_logits: Tensor, eps: float = 1e-8
) -> Tensor:
    """Elementwise ZINB log-pmf on top of :func:`textbook_log_nb`, zeros selected by masks."""
    log_nb = textbook_log_nb(x, mu, theta, eps)
    log_nb_zero = theta * (torch.log(theta + eps) - torch.log(theta + mu + eps))
    is_zero = (x < eps).to(x.dtype)
    zero_case = torch.logaddexp(zi_logits, log_nb_zero) - F.softplus(zi_logits)
    nonzero_case = log_nb - F.softplus(zi_logits)
    return is_zero * zero_case + (1 - is_zero) * nonzero_case


def simulate(n_cells: int, n_genes: int, seed: int = 0) -> dict[str, Tensor]:
    """Counts from a Gamma-Poisson model with log-normal gene means, and matching parameters."""
    torch.manual_seed(seed)
    gene_share = torch.softmax(1.5 * torch.randn(n_genes), 0)
    library = torch.exp(8.0 + 0.3 * torch.randn(n_cells, 1))
    mu = library * gene_share * torch.exp(0.3 * torch.randn(n_cells, n_genes))
    theta = torch.exp(0.5 + torch.randn(n_genes))
    rate = torch.distributions.Gamma(theta, theta / mu).sample()
    counts = torch.poisson(rate)
    counts[:, 0] += 1  # every cell has a finite log library size
    zi_logits = torch.randn(n_cells, n_genes) - 2
    return {"x": counts, "mu": mu, "theta": theta, "zi_logits": zi_logits}


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def time_likelihoods(data: dict[str, Tensor], repeats: int) -> None:
    x = data["x"]
    variants: dict[str, Callable[..., Tensor]] = {
        "exact NB": lambda m, t, z: log_nb_positive(x, m, t).sum(-1),
        "textbook NB": lambda m, t, z: textbook_log_nb(x, m, t).sum(-1),
        "fused NB": lambda m, t, z: nb_log_likelihood_sum(x, m, t),
        "exact ZINB": lambda m, t, z: log_zinb_positive(x, m, t, z).sum(-1),
        "textbook ZINB": lambda m, t, z: textbook_log_zinb(x, m, t, z).sum(-1),
        "fused ZINB": lambda m, t, z: zinb_log_likelihood_sum(x, m, t, z),
        # (cells, genes) theta, as dispersion="gene-batch" gives: no per-gene tables.
        "fused ZINB, theta per cell": lambda m, t, z: zinb_log_likelihood_sum(
            x, m, t.expand_as(m), z
        ),
    }
    params = [data[k].clone().requires_grad_() for k in ("mu", "theta", "zi_logits")]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.process_time()
            fn(*params).sum().backward()
            times[name].append(time.process_time() - start)
    print(
        f"likelihood forward + backward, {x.shape[0]} x {x.shape[1]} "
        f"(density {(x > 0).float().mean():.2f}), theta per gene:"
    )
    for name, samples in times.items():
        print(f"  {name:26s} {median_ms(samples):7.2f} ms")


def time_training_step(data: dict[str, Tensor], repeats: int) -> None:
    x = data["x"]
    torch.manual_seed(0)
    module = VAE(n_input=x.shape[1])
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    tensors = {REGISTRY_KEYS.X_KEY: x}
    reconstructions: dict[str, Callable] = {
        "exact": lambda px: px.log_prob(x).sum(-1),
        "textbook": lambda px: textbook_log_zinb(x, px.mu, px.theta, px.zi_logits).sum(-1),
        "fused": lambda px: px.log_prob_sum(x),
    }

    def step(reconstruction: Callable) -> None:
        inference_outputs, generative_outputs = module(tensors, compute_loss=False)
        kl_z = kl_divergence(inference_outputs["qz"], generative_outputs["pz"]).sum(-1)
        loss = torch.mean(kl_z - reconstruction(generative_outputs["px"]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    times: dict[str, list[float]] = {name: [] for name in reconstructions}
    for _ in range(repeats):
        for name, reconstruction in reconstructions.items():
            start = time.process_time()
            step(reconstruction)
            times[name].append(time.process_time() - start)
    print(f"VAE (ZINB, gene dispersion) training step, batch {x.shape[0]}:")
    for name, samples in times.items():
        print(f"  {name:26s} {median_ms(samples):7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=128)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = simulate(args.cells, args.genes)
    time_likelihoods(data, args.repeats)
    time_training_step(data, args.repeats)


if __name__ == "__main__":
    main()
