"""Every combination of the VAE's options builds and trains.

Likelihood x dispersion x latent distribution are the test parameters; within each test,
every covariate encoding (encoder or not, one-hot or embedding) x batch norm x layer norm
placement is built and takes an optimizer step that must move every parameter. The library
model (observed or modelled) alternates over the combinations, so each test covers both.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cellvi.module import VAE

from ._inputs import BASE_KWARGS, N_BATCH, make_tensors

LIKELIHOODS = ("zinb", "nb", "poisson", "normal")
DISPERSIONS = ("gene", "gene-batch", "gene-label", "gene-cell")
LATENTS = ("normal", "ln")
NORMS = ("none", "encoder", "decoder", "both")
COVARIATE_ENCODINGS = {
    "decoder one-hot": {"encode_covariates": False, "batch_representation": "one-hot"},
    "decoder embedding": {"encode_covariates": False, "batch_representation": "embedding"},
    "both one-hot": {"encode_covariates": True, "batch_representation": "one-hot"},
    "both embedding": {"encode_covariates": True, "batch_representation": "embedding"},
}
LIBRARIES = {
    "observed": {},
    "modelled": {
        "use_observed_lib_size": False,
        "library_log_means": np.full((1, N_BATCH), 3.0),
        "library_log_vars": np.ones((1, N_BATCH)),
    },
}


def _train_one_step(options: dict) -> None:
    torch.manual_seed(0)
    module = VAE(**{**BASE_KWARGS, "n_hidden": 8, "n_layers": 2, **options})
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    tensors = make_tensors()
    _, _, output = module(tensors)
    assert torch.isfinite(output.loss), "loss is not finite"
    output.loss.backward()
    optimizer.step()
    frozen = [name for name, p in module.named_parameters() if torch.equal(p, before[name])]
    assert not frozen, f"parameters that never learn: {frozen}"


@pytest.mark.parametrize("latent_distribution", LATENTS)
@pytest.mark.parametrize("dispersion", DISPERSIONS)
@pytest.mark.parametrize("gene_likelihood", LIKELIHOODS)
def test_every_option_combination_builds_and_trains(
    gene_likelihood: str, dispersion: str, latent_distribution: str
) -> None:
    failures = []
    combinations = itertools.product(COVARIATE_ENCODINGS, NORMS, NORMS)
    for index, (encoding, batch_norm, layer_norm) in enumerate(combinations):
        library = list(LIBRARIES)[index % len(LIBRARIES)]
        options = {
            "gene_likelihood": gene_likelihood,
            "dispersion": dispersion,
            "latent_distribution": latent_distribution,
            "use_batch_norm": batch_norm,
            "use_layer_norm": layer_norm,
            **COVARIATE_ENCODINGS[encoding],
            **LIBRARIES[library],
        }
        try:
            _train_one_step(options)
        except Exception as error:  # collect all, so one run names every failing combination
            failures.append(
                f"{encoding}, batch norm {batch_norm}, layer norm {layer_norm}, "
                f"{library} library: {type(error).__name__}: {error}"
            )
    assert not failures, f"{len(failures)} combinations fail:\n" + "\n".join(failures[:10])
