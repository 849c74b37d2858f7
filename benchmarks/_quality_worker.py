"""Train one library's SCVI (or CondSCVI) on one dataset and write its held-out figures as JSON.

Run by ``compare_scvi_tools.py`` (SCVI) and ``compare_condscvi.py`` (``--model CondSCVI``)
inside each library's own environment; it imports either ``cellvi`` or ``scvi`` (scvi-tools)
under the same name and calls the API they share.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata
import numpy as np

DATASETS = {
    "pbmc": {"file": "pbmc_7k_labeled.h5ad", "batch_key": None, "labels_key": "cell_type"},
    "kang": {"file": "kang_ifnb_2k.h5ad", "batch_key": "condition", "labels_key": None},
}


def split(n_cells: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """80 / 10 / 10 train / validation / test split, the same for both libraries."""
    order = np.random.default_rng(seed).permutation(n_cells)
    n_train, n_valid = int(0.8 * n_cells), int(0.1 * n_cells)
    return (
        np.sort(order[:n_train]),
        np.sort(order[n_train : n_train + n_valid]),
        np.sort(order[n_train + n_valid :]),
    )


def per_cell_mean(values) -> float:
    """Mean of per-cell values, whatever array type a library returns them in."""
    return float(np.mean(np.asarray(values, dtype=np.float64)))


def heldout_figures(
    model, model_name: str, test: np.ndarray, n_mc_samples: int
) -> dict[str, float]:
    """Held-out ELBO and marginal LL (SCVI) or reconstruction loss (CondSCVI), means over cells.

    Both libraries are asked for per-cell values and averaged here: scvi-tools 1.4's
    ``get_marginal_ll(return_mean=True)`` averages the minibatch means, which weights the
    cells of a short last minibatch more than the others.
    """
    figures = {"heldout_elbo": per_cell_mean(model.get_elbo(indices=test, return_mean=False))}
    if model_name == "SCVI":
        figures["heldout_marginal_ll"] = per_cell_mean(
            model.get_marginal_ll(indices=test, n_mc_samples=n_mc_samples, return_mean=False)
        )
    else:
        # scvi-tools' VAEC has no marginal_ll; both libraries report the reconstruction NLL.
        reconstruction = model.get_reconstruction_error(indices=test, return_mean=False)[
            "reconstruction_loss"
        ]
        figures["heldout_reconstruction_loss"] = per_cell_mean(reconstruction)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--library", choices=["cellvi", "scvi-tools"], required=True)
    parser.add_argument("--model", choices=["SCVI", "CondSCVI"], default="SCVI")
    parser.add_argument("--dataset", choices=list(DATASETS), required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--n-mc-samples", type=int, default=100)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--latent", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    spec = DATASETS[args.dataset]
    if args.model == "CondSCVI" and spec["labels_key"] is None:
        parser.error(f"CondSCVI needs cell labels, which dataset {args.dataset!r} lacks.")
    import torch

    torch.set_num_threads(args.threads)

    if args.library == "cellvi":
        import cellvi as library
    else:
        import scvi as library

    adata = anndata.read_h5ad(args.data_dir / spec["file"])
    train, valid, test = split(adata.n_obs, args.seed)
    library.settings.seed = args.seed
    if args.model == "CondSCVI":
        library.model.CondSCVI.setup_anndata(
            adata, labels_key=spec["labels_key"], batch_key=spec["batch_key"]
        )
        model = library.model.CondSCVI(adata)
    else:
        library.model.SCVI.setup_anndata(adata, batch_key=spec["batch_key"])
        model = library.model.SCVI(adata)
    start = time.perf_counter()
    model.train(
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        accelerator="cpu",
        datasplitter_kwargs={"external_indexing": [train, valid, test]},
        enable_progress_bar=False,
    )
    train_seconds = time.perf_counter() - start
    np.save(args.latent, model.get_latent_representation())
    result = {
        "library": args.library,
        "version": library.__version__,
        "dataset": args.dataset,
        "seed": args.seed,
        "max_epochs": args.max_epochs,
        "threads": args.threads,
        "train_seconds": train_seconds,
        **heldout_figures(model, args.model, test, args.n_mc_samples),
        "test_indices": test.tolist(),
        "train_indices": train.tolist(),
    }
    if args.model == "CondSCVI":
        result["model"] = args.model
    args.output.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
