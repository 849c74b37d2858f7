"""Save small scvi-tools models and their outputs, for cellvi's loader to be checked against.

Runs in scvi-tools' own environment (``make bench-env``); it never imports cellvi:

    .venv-scvi-tools/bin/python benchmarks/_scvi_tools_reference.py --out /tmp/reference

For every configuration it trains a model for one epoch, saves it with its AnnData under
``OUT/<name>/`` and writes ``OUT/<name>/outputs.npz``: the posterior of the first 64 cells and
the parameters of the count distribution decoded from the posterior means, computed by
scvi-tools' module in eval mode. ``tests/model/test_scvi_tools_files.py`` loads each model into
cellvi and requires the same numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import scvi
import torch

SCVI_CONFIGURATIONS = {
    "scvi_default": ({"batch_key": "batch"}, {}),
    "scvi_covariates": (
        {
            "batch_key": "batch",
            "labels_key": "labels",
            "categorical_covariate_keys": ["donor"],
            "continuous_covariate_keys": ["percent_mito"],
        },
        {
            "gene_likelihood": "nb",
            "dispersion": "gene-batch",
            "n_layers": 2,
            "encode_covariates": True,
            "deeply_inject_covariates": False,
            "use_batch_norm": "encoder",
            "use_layer_norm": "both",
        },
    ),
    "scvi_embedding": (
        {"batch_key": "batch", "labels_key": "labels"},
        {
            "gene_likelihood": "poisson",
            "batch_representation": "embedding",
            "encode_covariates": True,
            "use_observed_lib_size": False,
            "latent_distribution": "ln",
        },
    ),
    "scvi_gene_label": (
        {"batch_key": "batch", "labels_key": "labels"},
        {"dispersion": "gene-label", "n_hidden": 32, "n_latent": 4},
    ),
    "scvi_gene_cell": ({"batch_key": "batch"}, {"dispersion": "gene-cell"}),
}
CONDSCVI_CONFIGURATIONS = {
    "condscvi_batches": (
        {"labels_key": "labels", "batch_key": "batch"},
        {"encode_covariates": True},
    ),
    "condscvi_weighted": ({"labels_key": "labels"}, {"weight_obs": True, "n_latent": 3}),
}


def make_adata():
    adata = scvi.data.synthetic_iid(batch_size=100, n_genes=60, n_batches=2, n_labels=3)
    rng = np.random.default_rng(0)
    adata.obs["donor"] = rng.choice(["d1", "d2", "d3"], size=adata.n_obs)
    adata.obs["percent_mito"] = rng.random(adata.n_obs)
    return adata


def outputs(model, adata) -> dict[str, np.ndarray]:
    """Posterior and decoded distribution of the first 64 cells (module in eval mode)."""
    module = model.module
    module.eval()
    loader = model._make_data_loader(adata=adata, indices=np.arange(64), batch_size=64)
    tensors = next(iter(loader))
    with torch.no_grad():
        inference = module.inference(**module._get_inference_input(tensors))
        qz = inference["qz"]
        # Means instead of draws, so both libraries decode the same point.
        means = {"z": qz.loc}
        if inference.get("ql") is not None:
            means["library"] = inference["ql"].loc
        generative_inputs = module._get_generative_input(tensors, {**inference, **means})
        px = module.generative(**generative_inputs)["px"]
    result = {"qz_loc": qz.loc.numpy(), "qz_scale": qz.scale.numpy()}
    for name in ("mu", "theta", "zi_logits", "rate", "loc", "scale"):
        value = getattr(px, name, None)
        if isinstance(value, torch.Tensor):
            result[f"px_{name}"] = value.numpy()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    scvi.settings.seed = 0
    index = {}
    for configurations, model_class in (
        (SCVI_CONFIGURATIONS, scvi.model.SCVI),
        (CONDSCVI_CONFIGURATIONS, scvi.model.CondSCVI),
    ):
        for name, (setup, init) in configurations.items():
            adata = make_adata()
            model_class.setup_anndata(adata, **setup)
            model = model_class(adata, **init)
            model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
            directory = args.out / name
            model.save(directory, save_anndata=True, overwrite=True)
            np.savez(directory / "outputs.npz", **outputs(model, adata))
            index[name] = model_class.__name__
    (args.out / "index.json").write_text(json.dumps(index))


if __name__ == "__main__":
    main()
