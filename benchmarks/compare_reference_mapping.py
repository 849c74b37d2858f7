"""Reference mapping (scArches) in cellvi and scvi-tools 1.4.2, at the same settings.

For each seed, ``cellvi.data.simulate`` makes four batches of known cell types (seeded); in
each library (its own environment, ``_reference_mapping_worker.py``) a reference SCVI learns
three batches, the fourth is mapped onto it with ``load_query_data`` and trained (scvi-tools'
scArches tutorial settings: layer norm, covariates encoded, no weight decay), and an SCVI
learns all four de novo for comparison. From each latent space of all cells it reports:

- ``knn_accuracy``: cell types of the query cells predicted by a 15-NN vote of the reference
  cells (label transfer);
- ``ilisi_query``: scib-metrics' iLISI of reference against query (how well the query mixes
  into the reference; 0 none, 1 perfect);
- ``ilisi_batches``: iLISI of the four batches;
- ``celltype_asw``: scib-metrics' cell-type silhouette (types kept apart);

for the mapped model (``mapped_*``) and the de novo one (``de_novo_*``), and the seconds of
the query training, of the reference's and of the de novo model's. Each row gives both
libraries' mean ± sd over seeds, the 95% interval of the paired difference and a verdict; a
figure (``--figure``) shows every seed. Needs the ``bench`` extra (scib-metrics).

    .venv/bin/python benchmarks/compare_reference_mapping.py \
        --reference-python .venv-scvi-tools/bin/python --seeds 0 1 2 --jobs 2

``--summarise results/reference_mapping.json`` prints the table of an earlier run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _comparison import LIBRARIES, MAPPING_SIMULATION, ROOT, comparison_row  # noqa: E402
from _latent_metrics import knn_accuracy, neighbours, require_bench_extra  # noqa: E402

QUERY_BATCH = "batch_3"
# Metric -> whether higher is better, in the table's order.
METRICS = {
    **{
        f"{space}_{name}": True
        for space in ("mapped", "de_novo")
        for name in ("knn_accuracy", "ilisi_query", "ilisi_batches", "celltype_asw")
    },
    "query_train_seconds": False,
    "reference_train_seconds": False,
    "de_novo_train_seconds": False,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference-python", help="python of the scvi-tools environment")
    parser.add_argument("--cellvi-python", default=sys.executable)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    # simulate()'s arguments; the defaults (MAPPING_SIMULATION) make transfer hard but
    # learnable. With weaker cell types (--type-effect 0.6) the scArches architecture (layer
    # norm, two layers) learns no cell types in 50 epochs, in both libraries alike (15-NN
    # transfer at chance); at --batch-effect 0.8 the query maps apart.
    defaults = MAPPING_SIMULATION
    parser.add_argument("--n-cells", type=int, default=defaults["n_cells"], help="all batches")
    parser.add_argument("--n-genes", type=int, default=defaults["n_genes"])
    parser.add_argument("--n-cell-types", type=int, default=defaults["n_cell_types"])
    parser.add_argument("--marker-fraction", type=float, default=defaults["marker_fraction"])
    parser.add_argument("--type-effect", type=float, default=defaults["type_effect_strength"])
    parser.add_argument("--library-log-mean", type=float, default=defaults["library_log_mean"])
    parser.add_argument("--batch-effect", type=float, default=defaults["batch_effect_strength"])
    parser.add_argument("--max-epochs", type=int, default=50, help="reference and de novo")
    parser.add_argument("--query-epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (timings then share)")
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks" / "results" / "reference_mapping.json"
    )
    parser.add_argument("--figure", type=Path, help="PNG of every seed's figures")
    parser.add_argument("--summarise", type=Path, metavar="RESULTS", help="train nothing")
    args = parser.parse_args()
    if not args.summarise and args.reference_python is None and "scvi-tools" in args.libraries:
        parser.error("--reference-python (scvi-tools' environment, `make bench-env`) is needed.")
    return args


def simulate(args: argparse.Namespace, seed: int, path: Path) -> None:
    """Write the seed's data: four batches of ``n_cells / 4`` cells, known cell types."""
    import cellvi

    adata = cellvi.data.simulate(
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        n_batches=4,
        n_cell_types=args.n_cell_types,
        marker_fraction=args.marker_fraction,
        type_effect_strength=args.type_effect,
        library_log_mean=args.library_log_mean,
        batch_effect_strength=args.batch_effect,
        seed=seed,
    )
    del adata.varm["type_profiles"], adata.varm["batch_log_effects"], adata.uns["simulation"]
    adata.write_h5ad(path)


def run(library: str, seed: int, data: Path, args: argparse.Namespace, workdir: Path) -> dict:
    """One library's reference, query and de novo models for one seed, with their figures."""
    python = args.cellvi_python if library == "cellvi" else args.reference_python
    output = workdir / f"{library}-{seed}.json"
    command = [
        python,
        str(ROOT / "benchmarks" / "_reference_mapping_worker.py"),
        *("--library", library, "--data", str(data), "--query-batch", QUERY_BATCH),
        *("--seed", str(seed), "--max-epochs", str(args.max_epochs)),
        *("--query-epochs", str(args.query_epochs), "--threads", str(args.threads)),
        *("--output", str(output)),
    ]
    print(f"running {library}, seed {seed} ...", flush=True)
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"{library}, seed {seed} failed:\n{finished.stderr[-3000:]}")
    result = json.loads(output.read_text())
    latents = np.load(output.with_suffix(".npz"))
    result.update(latent_figures(data, latents["mapped"], "mapped"))
    result.update(latent_figures(data, latents["de_novo"], "de_novo"))
    return result


def latent_figures(data: Path, latent: np.ndarray, space: str) -> dict[str, float]:
    """Label transfer and mixing figures of one latent (cells: reference first, then query)."""
    import anndata
    import scib_metrics

    obs = anndata.read_h5ad(data, backed="r").obs
    is_query = (obs["batch"] == QUERY_BATCH).to_numpy()
    order = np.concatenate([np.flatnonzero(~is_query), np.flatnonzero(is_query)])
    labels = obs["cell_type"].astype(str).to_numpy()[order]
    batches = obs["batch"].astype(str).to_numpy()[order]
    n_reference = int((~is_query).sum())
    reference, query = np.arange(n_reference), np.arange(n_reference, len(order))
    found = neighbours(latent)
    side = np.where(np.arange(len(order)) < n_reference, "reference", "query")
    return {
        f"{space}_knn_accuracy": knn_accuracy(latent, labels, reference, query),
        f"{space}_ilisi_query": float(scib_metrics.ilisi_knn(found, side)),
        f"{space}_ilisi_batches": float(scib_metrics.ilisi_knn(found, batches)),
        f"{space}_celltype_asw": float(scib_metrics.silhouette_label(latent, labels)),
    }


def summarise(results: list[dict]) -> str:
    """Markdown table: each metric's mean ± sd per library and the paired verdict."""
    lines = [
        "| metric | cellvi (mean ± sd) | scvi-tools (mean ± sd) | cellvi − scvi-tools [95% CI] "
        "| verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for metric, higher_is_better in METRICS.items():
        by_seed = {
            library: {r["seed"]: r[metric] for r in results if r["library"] == library}
            for library in LIBRARIES
        }
        if any(not values for values in by_seed.values()):
            continue
        lines.append(comparison_row([metric], by_seed, higher_is_better))
    return "\n".join(lines)


def figure(results: list[dict], path: Path) -> None:
    """One panel per metric: every seed's value, per library."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if any(m in r for r in results)]
    columns = 4
    rows = -(-len(metrics) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        for position, library in enumerate(LIBRARIES):
            values = [r[metric] for r in results if r["library"] == library and metric in r]
            ax.scatter(np.full(len(values), position), values, alpha=0.7)
            if values:
                ax.hlines(np.mean(values), position - 0.25, position + 0.25, color="black")
        ax.set_xticks(range(len(LIBRARIES)), LIBRARIES)
        ax.set_xlim(-0.6, len(LIBRARIES) - 0.4)
        ax.set_title(metric, fontsize=9)
    for ax in axes.ravel()[len(metrics) :]:
        ax.axis("off")
    fig.suptitle("Reference mapping: cellvi and scvi-tools 1.4.2, one point per seed")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parse_args()
    if args.summarise:
        results = json.loads(args.summarise.read_text())
    else:
        require_bench_extra()
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            data = {seed: workdir / f"data-{seed}.h5ad" for seed in args.seeds}
            for seed, path in data.items():
                simulate(args, seed, path)
            runs = [(library, seed) for seed in args.seeds for library in args.libraries]
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                results = list(
                    pool.map(lambda r: run(r[0], r[1], data[r[1]], args, workdir), runs)
                )
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1))
        print(
            f"\n{args.n_cells} simulated cells x {args.n_genes} genes, 4 batches "
            f"({QUERY_BATCH} the query), {args.n_cell_types} cell types ({args.marker_fraction} "
            f"of genes markers, type effect {args.type_effect}, library log mean "
            f"{args.library_log_mean}, batch effect {args.batch_effect}), seeds {args.seeds}; "
            f"reference and de novo {args.max_epochs} epochs, query {args.query_epochs}; "
            f"{args.threads} torch thread(s) per run, {args.jobs} run(s) at once\n"
        )
    print(summarise(results))
    if args.figure:
        figure(results, args.figure)
        print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
