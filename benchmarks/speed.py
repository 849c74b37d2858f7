"""Training speed of cellvi vs scvi-tools on the same simulated counts, side by side.

Both libraries train the default SCVI (same architecture, batch size, epochs and split) on
one ``cellvi.data.simulate`` dataset, each in its own environment, one after the other:

    .venv/bin/python benchmarks/speed.py --reference-python .venv-scvi-tools/bin/python \
        --n-cells 20000 --n-genes 2000 --batch-sizes 128 --accelerator cpu

It prints cells/s, s/epoch, peak host and device memory and held-out ELBO for both, and
cellvi's speed-up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import cellvi

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = [
    "cells_per_second",
    "seconds_per_epoch",
    "peak_host_mib",
    "peak_device_mib",
    "heldout_elbo",
]


def _format(column: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if column in ("seconds_per_epoch", "heldout_elbo") else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--reference-python", required=True, help="python of the scvi-tools environment"
    )
    parser.add_argument("--cellvi-python", default=sys.executable)
    parser.add_argument("--n-cells", type=int, default=20_000)
    parser.add_argument("--n-genes", type=int, default=2_000)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[128])
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu", "cuda"])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json"
    )
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as workdir:
        data = Path(workdir) / "simulated.h5ad"
        adata = cellvi.data.simulate(n_cells=args.n_cells, n_genes=args.n_genes, seed=0)
        adata.write_h5ad(data)
        order = np.random.default_rng(0).permutation(args.n_cells)
        n_train, n_valid = int(0.8 * args.n_cells), int(0.1 * args.n_cells)
        split = Path(workdir) / "split.npz"
        np.savez(
            split,
            train=order[:n_train],
            valid=order[n_train : n_train + n_valid],
            test=order[n_train + n_valid :],
        )
        density = adata.X.nnz / (adata.n_obs * adata.n_vars)
        for batch_size in args.batch_sizes:
            for library, python in (
                ("cellvi", args.cellvi_python),
                ("scvi-tools", args.reference_python),
            ):
                output = Path(workdir) / f"{library}-{batch_size}.json"
                command = [
                    python,
                    str(ROOT / "benchmarks" / "_speed_worker.py"),
                    "--library",
                    library,
                    "--data",
                    str(data),
                    "--split",
                    str(split),
                    "--accelerator",
                    args.accelerator,
                    "--batch-size",
                    str(batch_size),
                    "--max-epochs",
                    str(args.max_epochs),
                    "--output",
                    str(output),
                ] + (["--threads", str(args.threads)] if args.threads else [])
                print(f"{library}, batch size {batch_size} ...", flush=True)
                subprocess.run(
                    command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                results.append(json.loads(output.read_text()))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1))
    print(
        f"\n{args.n_cells} x {args.n_genes} simulated counts (density {density:.2f}), "
        f"{args.max_epochs} epochs, 80/10/10 split, {results[0]['device']}\n"
    )
    print(
        "| batch | library | cells/s | s/epoch | peak host MiB | peak device MiB | held-out ELBO |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for result in results:
        cells = [_format(column, result[column]) for column in COLUMNS]
        print(
            f"| {result['batch_size']} | {result['library']} {result['version']} | "
            + " | ".join(cells)
            + " |"
        )
    for batch_size in args.batch_sizes:
        pair = {r["library"]: r for r in results if r["batch_size"] == batch_size}
        ratio = pair["cellvi"]["cells_per_second"] / pair["scvi-tools"]["cells_per_second"]
        print(f"batch {batch_size}: cellvi trains {ratio:.2f}x the cells/s of scvi-tools")


if __name__ == "__main__":
    main()
