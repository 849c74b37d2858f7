"""What every cellvi-against-scvi-tools comparison shares: options, runs, and the verdict table.

Each run trains one library in its own environment (``_quality_worker.py``) for one seed;
runs may go in parallel (``--jobs``), one torch thread each. The table pairs the libraries by
seed (each seed gives both the same split and test cells) and says, per metric, whether cellvi
matches or beats scvi-tools within the seed-to-seed noise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("cellvi", "scvi-tools")
# The reference-mapping data of compare_reference_mapping.py and compare_scanvi.py's query
# setting (cellvi.data.simulate's arguments): four batches, six cell types told apart by
# few marker genes (2%) in cells of few counts (median about 400), so that label transfer
# is hard but learnable: at simulate()'s defaults (10% markers, about 1,800 counts) both
# libraries transfer every label (accuracy 1.0), and with weaker marker effects (0.6) neither
# learns the types.
MAPPING_SIMULATION = {
    "n_cells": 4_000,
    "n_genes": 1_000,
    "n_batches": 4,
    "n_cell_types": 6,
    "marker_fraction": 0.02,
    "type_effect_strength": 1.5,
    "library_log_mean": 6.0,
    "batch_effect_strength": 0.6,
}
# Direction of "better" for each metric the workers and the latent metrics report, in the
# table's order. scib-metrics' figures are all "higher is better".
HIGHER_IS_BETTER = {
    "heldout_elbo": True,
    "heldout_marginal_ll": True,
    "heldout_reconstruction_loss": False,
    "knn_accuracy": True,
    "silhouette_label": True,
    "clisi_knn": True,
    "nmi_kmeans": True,
    "ari_kmeans": True,
    "ilisi_knn": True,
    "kbet": True,
    "pcr_comparison": True,
    # A hand-written normalised batch entropy, replaced by iLISI; kept so that --summarise
    # still reads results files from before (the README's measured table holds it).
    "batch_mixing": True,
    "train_seconds": False,
}


def comparison_parser(description: str, output_name: str) -> argparse.ArgumentParser:
    """Options every library-against-library comparison takes."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference-python", help="python of the scvi-tools environment")
    parser.add_argument("--cellvi-python", default=sys.executable)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument(
        "--n-mc-samples", type=int, default=100, help="importance samples of the marginal LL"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at once (timings then share the cores)"
    )
    parser.add_argument(
        "--libraries",
        nargs="+",
        choices=LIBRARIES,
        default=list(LIBRARIES),
        help=(
            "train only these (e.g. cellvi after a change; merge with earlier runs via "
            "--summarise)"
        ),
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks" / "results" / output_name
    )
    parser.add_argument(
        "--summarise",
        nargs="+",
        type=Path,
        metavar="RESULTS",
        help="train nothing: print the table of earlier results files, merged",
    )
    return parser


def parse_comparison_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, and stop with a clear message when a run would miss its data or environment."""
    args = parser.parse_args()
    if args.summarise:
        return args
    if args.reference_python is None and "scvi-tools" in args.libraries:
        parser.error(
            "--reference-python (the scvi-tools environment, see `make bench-env`) is required."
        )
    if not args.data_dir.is_dir():
        sys.exit(f"No data directory at {args.data_dir} (see ../shared/data/README.md).")
    return args


def load_results(paths: Sequence[Path]) -> list[dict]:
    """Results of earlier runs, merged; a (library, dataset, model, seed) run counts once."""
    merged: dict[tuple, dict] = {}
    for path in paths:
        for result in json.loads(path.read_text()):
            merged[
                (result["library"], result["dataset"], result.get("model", "SCVI"), result["seed"])
            ] = result
    return list(merged.values())


def run_worker(
    python: str,
    library: str,
    dataset: str,
    model: str,
    seed: int,
    args: argparse.Namespace,
    workdir: Path,
) -> dict:
    """Train one library's model on one dataset for one seed; return its figures and latent."""
    stem = workdir / f"{library}-{model}-{dataset}-{seed}"
    command = [
        python,
        str(ROOT / "benchmarks" / "_quality_worker.py"),
        "--library",
        library,
        "--model",
        model,
        "--dataset",
        dataset,
        "--data-dir",
        str(args.data_dir),
        "--seed",
        str(seed),
        "--max-epochs",
        str(args.max_epochs),
        "--threads",
        str(args.threads),
        "--n-mc-samples",
        str(args.n_mc_samples),
        "--output",
        f"{stem}.json",
        "--latent",
        f"{stem}.npy",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    result = json.loads(Path(f"{stem}.json").read_text())
    result["latent"] = np.load(f"{stem}.npy")
    return result


def run_all(
    runs: Sequence[tuple[str, str, int]],
    model: str,
    args: argparse.Namespace,
    workdir: Path,
    finish: Callable[[dict], None],
) -> list[dict]:
    """Run (library, dataset, seed) triples, ``args.jobs`` at a time; ``finish`` adds metrics."""
    pythons = {"cellvi": args.cellvi_python, "scvi-tools": args.reference_python}

    def one(run: tuple[str, str, int]) -> dict:
        library, dataset, seed = run
        print(f"training {library} {model} on {dataset}, seed {seed} ...", flush=True)
        result = run_worker(pythons[library], library, dataset, model, seed, args, workdir)
        finish(result)
        return result

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(pool.map(one, runs))


def _difference(
    cellvi: dict[int, float], reference: dict[int, float]
) -> tuple[float, float, float, str]:
    """Mean difference cellvi - scvi-tools with its 95% interval: paired by seed when possible."""
    shared = sorted(set(cellvi) & set(reference))
    if len(shared) >= 2 and len(shared) == len(cellvi) == len(reference):
        differences = np.array([cellvi[s] - reference[s] for s in shared])
        interval = stats.ttest_1samp(differences, 0.0).confidence_interval(0.95)
        return differences.mean(), interval.low, interval.high, "paired"
    a, b = np.array(list(cellvi.values())), np.array(list(reference.values()))
    if len(a) < 2 or len(b) < 2:
        return a.mean() - b.mean(), np.nan, np.nan, "too few seeds"
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return a.mean() - b.mean(), interval.low, interval.high, "Welch"


def verdict(low: float, high: float, higher_is_better: bool) -> str:
    """Read a 95% interval of cellvi - scvi-tools: better, within noise, or worse."""
    if np.isnan(low):
        return "n/a"
    if not higher_is_better:
        low, high = -high, -low
    if low > 0:
        return "cellvi better"
    if high < 0:
        return "cellvi worse"
    return "within noise"


def summarise(results: list[dict]) -> str:
    """Markdown table: per dataset and metric, each library's mean ± sd and the verdict."""
    lines = [
        "| dataset | metric | cellvi (mean ± sd) | scvi-tools (mean ± sd) "
        "| cellvi − scvi-tools [95% CI] | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for dataset in sorted({r["dataset"] for r in results}):
        for metric, higher_is_better in HIGHER_IS_BETTER.items():
            by_seed = {
                library: {
                    r["seed"]: r[metric]
                    for r in results
                    if r["dataset"] == dataset and r["library"] == library and metric in r
                }
                for library in LIBRARIES
            }
            if any(not values for values in by_seed.values()):
                continue
            lines.append(comparison_row([dataset, metric], by_seed, higher_is_better))
    return "\n".join(lines)


def comparison_row(
    labels: list[str], by_seed: dict[str, dict[int, float]], higher_is_better: bool
) -> str:
    """One markdown row: ``labels``, each library's mean ± sd and the paired verdict."""
    cells = [
        f"{np.mean(list(v.values())):.4g} ± "
        f"{np.std(list(v.values()), ddof=1) if len(v) > 1 else 0:.2g} (n={len(v)})"
        for v in by_seed.values()
    ]
    mean, low, high, kind = _difference(by_seed["cellvi"], by_seed["scvi-tools"])
    return (
        f"| {' | '.join(labels)} | {cells[0]} | {cells[1]} "
        f"| {mean:+.4g} [{low:+.3g}, {high:+.3g}] {kind} "
        f"| {verdict(low, high, higher_is_better)} |"
    )
