"""Reference mapping in one library: a reference on three batches, the fourth mapped onto it.

Run by ``compare_reference_mapping.py`` inside each library's own environment; it imports
either ``cellvi`` or ``scvi`` (scvi-tools) under the same name and calls the API they share.
It reads simulated data (``batch``: four batches, ``cell_type``), trains a reference SCVI on
the batches other than the last, maps the last one with ``load_query_data`` and trains it
(scvi-tools' scArches tutorial settings), trains an SCVI de novo on all four batches, and
writes the timings (JSON) and both latent spaces of every cell (reference cells first, then
the query's, each in the data's order).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata
import numpy as np

# scvi-tools' scArches tutorial: layer norm instead of batch norm, covariates in the encoder.
ARCHES = {
    "use_layer_norm": "both",
    "use_batch_norm": "none",
    "encode_covariates": True,
    "dropout_rate": 0.2,
    "n_layers": 2,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--library", choices=["cellvi", "scvi-tools"], required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--query-batch", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--query-epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.library == "cellvi":
        import cellvi as lib
    else:
        import scvi as lib

    adata = anndata.read_h5ad(args.data)
    is_query = (adata.obs["batch"] == args.query_batch).to_numpy()
    reference, query = adata[~is_query].copy(), adata[is_query].copy()
    ordered = anndata.concat([reference, query])  # reference cells first, then the query's
    train = {"accelerator": "cpu", "enable_progress_bar": False, "batch_size": 128}

    lib.settings.seed = args.seed
    lib.model.SCVI.setup_anndata(reference, batch_key="batch")
    reference_model = lib.model.SCVI(reference, **ARCHES)
    start = time.perf_counter()
    reference_model.train(max_epochs=args.max_epochs, **train)
    reference_seconds = time.perf_counter() - start

    query_model = lib.model.SCVI.load_query_data(query, reference_model)
    start = time.perf_counter()
    query_model.train(max_epochs=args.query_epochs, plan_kwargs={"weight_decay": 0.0}, **train)
    query_seconds = time.perf_counter() - start
    mapped = query_model.get_latent_representation(ordered.copy())

    lib.settings.seed = args.seed
    de_novo_data = ordered.copy()
    lib.model.SCVI.setup_anndata(de_novo_data, batch_key="batch")
    de_novo = lib.model.SCVI(de_novo_data, **ARCHES)
    start = time.perf_counter()
    de_novo.train(max_epochs=args.max_epochs, **train)
    de_novo_seconds = time.perf_counter() - start

    np.savez(
        args.output.with_suffix(".npz"), mapped=mapped, de_novo=de_novo.get_latent_representation()
    )
    args.output.write_text(
        json.dumps(
            {
                "library": args.library,
                "version": lib.__version__,
                "seed": args.seed,
                "reference_train_seconds": reference_seconds,
                "query_train_seconds": query_seconds,
                "de_novo_train_seconds": de_novo_seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
