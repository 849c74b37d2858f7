"""Minibatches of tensors for module tests (modules never see AnnData)."""

from __future__ import annotations

import torch

from cellvi import REGISTRY_KEYS

N_CELLS, N_GENES, N_BATCH, N_LABELS = 24, 30, 3, 4
N_CATS_PER_COV = [2, 5]
N_CONT = 2


def make_tensors(seed: int = 0, n_cells: int = N_CELLS) -> dict[str, torch.Tensor]:
    """A minibatch with every registry key a VAE reads."""
    generator = torch.Generator().manual_seed(seed)
    rates = torch.rand(n_cells, N_GENES, generator=generator) * 5
    counts = torch.poisson(rates, generator=generator)
    counts[:, 0] += 1  # every cell has counts, so its log library size is finite
    return {
        REGISTRY_KEYS.X_KEY: counts,
        REGISTRY_KEYS.BATCH_KEY: torch.randint(0, N_BATCH, (n_cells, 1), generator=generator),
        REGISTRY_KEYS.LABELS_KEY: torch.randint(0, N_LABELS, (n_cells, 1), generator=generator),
        REGISTRY_KEYS.CAT_COVS_KEY: torch.stack(
            [torch.randint(0, n, (n_cells,), generator=generator) for n in N_CATS_PER_COV], dim=1
        ),
        REGISTRY_KEYS.CONT_COVS_KEY: torch.randn(n_cells, N_CONT, generator=generator),
        REGISTRY_KEYS.SIZE_FACTOR_KEY: torch.rand(n_cells, 1, generator=generator) + 0.5,
    }


BASE_KWARGS = {
    "n_input": N_GENES,
    "n_batch": N_BATCH,
    "n_labels": N_LABELS,
    "n_hidden": 16,
    "n_latent": 4,
    "n_continuous_cov": N_CONT,
    "n_cats_per_cov": N_CATS_PER_COV,
}
