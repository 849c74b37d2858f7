"""Compare cellvi's SCVI with scvi-tools' on real data: same split, settings and epochs.

Each library trains in its own environment (``make bench-env`` builds scvi-tools' one);
this script runs both, several seeds each, and prints a table of held-out ELBO, marginal
log-likelihood, 15-NN cell-type accuracy of the latent (pbmc) and batch mixing (kang).

    .venv/bin/python benchmarks/compare_scvi_tools.py \
        --reference-python .venv-scvi-tools/bin/python --seeds 0 1 2 --max-epochs 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import anndata
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _latent_metrics import batch_mixing_entropy, knn_accuracy  # noqa: E402
from _quality_worker import DATASETS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METRICS = ["heldout_elbo", "heldout_marginal_ll", "knn_accuracy", "batch_mixing", "train_seconds"]


def run_worker(python: str, library: str, dataset: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    output = workdir / f"{library}-{dataset}-{seed}.json"
    latent = workdir / f"{library}-{dataset}-{seed}.npy"
    command = [
        python, str(ROOT / "benchmarks" / "_quality_worker.py"), "--library", library,
        "--dataset", dataset, "--data-dir", str(args.data_dir), "--seed", str(seed),
        "--max-epochs", str(args.max_epochs), "--n-mc-samples", str(args.n_mc_samples),
        "--output", str(output), "--latent", str(latent), "--threads", str(args.threads),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    result = json.loads(output.read_text())
    result["latent"] = np.load(latent)
    return result


def add_latent_metrics(result: dict, adata: anndata.AnnData) -> None:
    latent = result.pop("latent")
    train, test = np.asarray(result.pop("train_indices")), np.asarray(result.pop("test_indices"))
    if "cell_type" in adata.obs:
        labels = adata.obs["cell_type"].astype(str).to_numpy()
        known = labels != "NA"
        result["knn_accuracy"] = knn_accuracy(latent, labels, train[known[train]], test[known[test]])
    if "condition" in adata.obs:
        result["batch_mixing"] = batch_mixing_entropy(latent, adata.obs["condition"].astype(str).to_numpy())


def summarise(results: list[dict]) -> str:
    lines = [
        "| dataset | metric | cellvi (mean ± sd) | scvi-tools (mean ± sd) | cellvi − scvi-tools |",
        "| --- | --- | --- | --- | --- |",
    ]
    for dataset in sorted({r["dataset"] for r in results}):
        for metric in METRICS:
            values = {
                library: np.array([r[metric] for r in results if r["dataset"] == dataset and r["library"] == library and metric in r])
                for library in ("cellvi", "scvi-tools")
            }
            if any(len(v) == 0 for v in values.values()):
                continue
            cells = [f"{v.mean():.4g} ± {v.std(ddof=1) if len(v) > 1 else 0:.2g}" for v in values.values()]
            difference = values["cellvi"].mean() - values["scvi-tools"].mean()
            lines.append(f"| {dataset} | {metric} | {cells[0]} | {cells[1]} | {difference:+.4g} |")
    return "\n".join(lines)


def comparison_parser(description: str, output_name: str) -> argparse.ArgumentParser:
    """Options every library-against-library comparison takes."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-python", required=True, help="python of the scvi-tools environment")
    parser.add_argument("--cellvi-python", default=sys.executable)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / output_name)
    return parser


def parse_comparison_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, and stop with a clear message when the data directory is missing."""
    args = parser.parse_args()
    if not args.data_dir.is_dir():
        sys.exit(f"No data directory at {args.data_dir} (see ../shared/data/README.md).")
    return args


def main() -> None:
    parser = comparison_parser(__doc__, "quality.json")
    parser.add_argument("--datasets", nargs="+", default=["pbmc", "kang"])
    parser.add_argument("--n-mc-samples", type=int, default=100)
    args = parse_comparison_args(parser)

    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for dataset in args.datasets:
            adata = None
            for seed in args.seeds:
                for library, python in (("cellvi", args.cellvi_python), ("scvi-tools", args.reference_python)):
                    print(f"training {library} on {dataset}, seed {seed} ...", flush=True)
                    result = run_worker(python, library, dataset, seed, args, Path(workdir))
                    if adata is None:
                        adata = anndata.read_h5ad(args.data_dir / DATASETS[dataset]["file"], backed="r")
                    add_latent_metrics(result, adata)
                    results.append(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1))
    print(f"\n{len(args.seeds)} seeds, {args.max_epochs} epochs, batch size 128, held-out = 10% test cells\n")
    print(summarise(results))


if __name__ == "__main__":
    main()
