"""Time one library's SCVI training on a given h5ad and write the figures as JSON.

Run by ``speed.py`` inside each library's own environment; ``cellvi`` and ``scvi``
(scvi-tools) are called through the API they share.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import anndata
import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--library", choices=["cellvi", "scvi-tools"], required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True, help="npz with train/valid/test")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.library == "cellvi":
        import cellvi as library
    else:
        import scvi as library

    adata = anndata.read_h5ad(args.data)
    split = np.load(args.split)
    library.settings.seed = args.seed
    library.model.SCVI.setup_anndata(adata, batch_key="batch")
    model = library.model.SCVI(adata)
    on_gpu = args.accelerator in ("gpu", "cuda")
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model.train(
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        accelerator=args.accelerator,
        devices=1,
        datasplitter_kwargs={"external_indexing": [split["train"], split["valid"], split["test"]]},
        enable_progress_bar=False,
    )
    seconds = time.perf_counter() - start
    n_train = len(split["train"])
    result = {
        "library": args.library,
        "version": library.__version__,
        "device": torch.cuda.get_device_name()
        if on_gpu
        else f"cpu x {torch.get_num_threads()} threads",
        "batch_size": args.batch_size,
        "max_epochs": args.max_epochs,
        "train_seconds": seconds,
        "seconds_per_epoch": seconds / args.max_epochs,
        # Validation passes run every epoch in both libraries and are part of the time.
        "cells_per_second": n_train * args.max_epochs / seconds,
        "peak_host_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_mib": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None,
        "heldout_elbo": float(model.get_elbo(indices=split["test"])),
    }
    args.output.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
