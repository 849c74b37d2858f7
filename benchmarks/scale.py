"""Out-of-core and distributed training at atlas scale: cells/s and peak host memory.

    .venv/bin/python benchmarks/scale.py all --dir /tmp/scale --n-cells 2000000

``write`` simulates counts (``--n-genes`` genes, about ``--nnz-per-cell`` non-zero counts per
cell, two batches) straight into a CSR h5ad file, ``--chunk`` cells at a time, so the matrix
is never whole in memory; ``all`` writes it (unless there) and runs, each in its own process
so that each peak RSS is its own:

- ``out-of-core``: one epoch of SCVI on the backed file (the streaming loader);
- ``in-memory``: one epoch on the first ``--in-memory-cells`` cells loaded into memory (the
  device-resident path, the fastest in-memory one), against ``out-of-core`` on those cells;
- ``ddp``: one epoch on those cells (backed) with 2 CPU processes (gloo) against 1.

Every process runs one torch thread (``--threads``), the streaming loader one more.

Prints one table; ``--json`` also writes the rows. Delete ``--dir`` when done: the file is
large by design.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def write_counts(path: Path, n_cells: int, n_genes: int, nnz_per_cell: int, chunk: int) -> None:
    """Simulated counts as a CSR h5ad file, written ``chunk`` cells at a time."""
    import anndata
    import h5py
    import pandas as pd

    rng = np.random.default_rng(0)
    density = nnz_per_cell / n_genes
    # Each gene's mean differs, and batch 1 doubles a tenth of the genes: a batch effect.
    gene_rates = rng.gamma(2.0, 0.5, n_genes).astype(np.float32)
    batch = np.repeat(np.array([0, 1], dtype=np.int8), [n_cells // 2, n_cells - n_cells // 2])
    with h5py.File(path, "w") as file:
        group = file.create_group("X")
        group.attrs.update(
            {
                "encoding-type": "csr_matrix",
                "encoding-version": "0.1.0",
                "shape": (n_cells, n_genes),
            }
        )
        data = group.create_dataset("data", (0,), np.float32, maxshape=(None,), chunks=(2**20,))
        indices = group.create_dataset(
            "indices", (0,), np.int32, maxshape=(None,), chunks=(2**20,)
        )
        indptr = np.zeros(n_cells + 1, dtype=np.int64)
        written = 0
        for start in range(0, n_cells, chunk):
            stop = min(start + chunk, n_cells)
            present = rng.random((stop - start, n_genes), dtype=np.float32) < density
            rows, cols = np.nonzero(present)
            rate = gene_rates[cols] * np.where((batch[start + rows] == 1) & (cols % 10 == 0), 2, 1)
            values = (1 + rng.poisson(rate)).astype(np.float32)
            data.resize((written + values.size,))
            indices.resize((written + values.size,))
            data[written:] = values
            indices[written:] = cols.astype(np.int32)
            indptr[start + 1 : stop + 1] = written + np.cumsum(
                np.bincount(rows, minlength=stop - start)
            )
            written += values.size
        group.create_dataset("indptr", data=indptr)
        obs = pd.DataFrame(
            {"batch": pd.Categorical.from_codes(batch, ["b0", "b1"])},
            index=pd.Index(np.char.add("c", np.arange(n_cells).astype(str)).astype(object)),
        )
        var = pd.DataFrame(index=pd.Index([f"g{j}" for j in range(n_genes)]))
        anndata.io.write_elem(file, "obs", obs)
        anndata.io.write_elem(file, "var", var)
        for name in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            anndata.io.write_elem(file, name, {})
        file.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})


class EpochClock:
    """Seconds of each training epoch (the fit without its setup)."""

    def __new__(cls):  # built lazily: Lightning is imported by the run only
        import lightning.pytorch as pl

        class _Clock(pl.Callback):
            def __init__(self) -> None:
                self.seconds: list[float] = []
                self.cells = 0

            def on_train_epoch_start(self, trainer, pl_module) -> None:
                self._start = time.perf_counter()
                self.cells = 0

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                self.cells += int(batch["X"].shape[0])

            def on_train_epoch_end(self, trainer, pl_module) -> None:
                self.seconds.append(time.perf_counter() - self._start)

        return _Clock()


def run(args: argparse.Namespace) -> dict:
    """One measured epoch; returns (rank 0) the row of the table."""
    import anndata
    import torch

    import cellvi
    from cellvi.model import SCVI

    torch.set_num_threads(args.threads)
    cellvi.settings.seed = 0
    adata = anndata.read_h5ad(args.path, backed="r")
    if args.n_cells is not None:
        adata = adata[: args.n_cells]
        adata = adata.to_memory() if args.mode == "in-memory" else _backed_prefix(args, adata)
    SCVI.setup_anndata(adata, batch_key="batch")
    model = SCVI(adata)
    clock = EpochClock()
    train_kw = {
        "max_epochs": 1,
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "callbacks": [clock],
        "datasplitter_kwargs": {"streaming": {"buffer_cells": args.buffer_cells}},
    }
    if args.mode == "in-memory":
        train_kw.pop("datasplitter_kwargs")
    if args.devices > 1:
        train_kw.update(devices=args.devices, strategy="ddp")
    model.train(**train_kw)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cells = clock.cells * max(args.devices, 1)
    return {
        "run": args.label,
        "cells": int(adata.n_obs),
        "trained_cells": cells,
        "seconds": clock.seconds[0],
        "cells_per_second": cells / clock.seconds[0],
        "peak_rss_mib_rank0": peak_mib,
        "rank": int(os.environ.get("LOCAL_RANK", 0)),
    }


def _backed_prefix(args: argparse.Namespace, view: object) -> object:
    """The first cells as their own backed file (a backed view cannot be registered)."""
    import anndata

    prefix = Path(args.path).with_name(f"prefix_{args.n_cells}.h5ad")
    if not prefix.exists():
        view.to_memory().write_h5ad(prefix)
    return anndata.read_h5ad(prefix, backed="r")


def _measure(label: str, argv: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, str(HERE), "run", "--label", label, *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    rows = [json.loads(line[5:]) for line in out.stdout.splitlines() if line.startswith("ROW: ")]
    if out.returncode != 0 or not rows:
        raise RuntimeError(f"{label} failed:\n{out.stderr[-4000:]}")
    print(f"{label}: {rows[0]}", flush=True)
    return rows[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["write", "run", "all"])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/scale"))
    parser.add_argument("--n-cells", type=int, default=2_000_000)
    parser.add_argument("--n-genes", type=int, default=2_000)
    parser.add_argument("--nnz-per-cell", type=int, default=520)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--in-memory-cells", type=int, default=200_000)
    parser.add_argument("--buffer-cells", type=int, default=8_192)
    parser.add_argument("--json", type=Path)
    # Options of one run (the ``run`` command, started by ``all``).
    parser.add_argument("--label", default="run")
    parser.add_argument("--path", type=Path)
    parser.add_argument("--mode", choices=["out-of-core", "in-memory"], default="out-of-core")
    parser.add_argument("--cells", dest="subset", type=int)
    parser.add_argument("--devices", type=int, default=1)
    # One torch thread per process: on a shared machine more threads contend for the cores.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.command == "run":
        args.n_cells = args.subset
        row = run(args)
        if row["rank"] == 0:
            print("ROW: " + json.dumps(row), flush=True)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / f"counts_{args.n_cells}x{args.n_genes}.h5ad"
    if not path.exists():
        start = time.perf_counter()
        write_counts(path, args.n_cells, args.n_genes, args.nnz_per_cell, args.chunk)
        print(
            f"wrote {path} ({path.stat().st_size / 2**30:.1f} GiB) in "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
    if args.command == "write":
        return
    common = ["--path", str(path), "--buffer-cells", str(args.buffer_cells)]
    subset = ["--cells", str(args.in_memory_cells)]
    rows = [
        _measure("out-of-core, all cells", common),
        _measure("in-memory, subset", [*common, *subset, "--mode", "in-memory"]),
        _measure("out-of-core, subset (= 1 process)", [*common, *subset]),
        _measure("out-of-core, subset, ddp 2 processes", [*common, *subset, "--devices", "2"]),
    ]
    print(f"\n{'run':38} {'cells':>9} {'cells/s':>9} {'s/epoch':>9} {'peak RSS MiB':>13}")
    for row in rows:
        print(
            f"{row['run']:38} {row['cells']:>9,} {row['cells_per_second']:>9,.0f} "
            f"{row['seconds']:>9.1f} {row['peak_rss_mib_rank0']:>13,.0f}"
        )
    ratio = rows[2]["cells_per_second"] / rows[1]["cells_per_second"]
    print(f"\nout-of-core / in-memory throughput on the subset: {ratio:.2f}")
    print(f"file: {path.stat().st_size / 2**30:.1f} GiB on disk")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
