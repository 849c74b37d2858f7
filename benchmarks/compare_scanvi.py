"""Compare cellvi's SCANVI with scvi-tools' on label prediction: same data, labels and epochs.

Settings (each run: scVI pre-training, then SCANVI from the scVI model, as the scvi-tools
tutorials do; both libraries get the same cells, hidden labels and epochs):

- ``pbmc90`` / ``pbmc99``: ``pbmc_7k_labeled.h5ad`` (its 'NA' cells left out) with 90% / 99%
  of the labels hidden, stratified by cell type (each type keeps at least one label), drawn
  per seed; figures: accuracy and macro-F1 of ``predict`` on the hidden cells.
- ``query``: ``cellvi.data.simulate`` with 4 batches (``MAPPING_SIMULATION``: hard but
  learnable label transfer; one data set per seed, written once and
  read by both libraries); a fully labeled reference of batches 0-2, and batch 3 mapped onto
  it as an unlabeled query with ``load_query_data``; figures: accuracy and macro-F1 of
  ``predict`` on the query. It needs ``SCANVI.load_query_data`` (scArches), and is left out,
  with a note, for a library that lacks it.

Every run also reports its training time (scVI and SCANVI, seconds). The table pairs the
libraries by seed and gives the 95% interval of cellvi - scvi-tools per figure.

    .venv/bin/python benchmarks/compare_scanvi.py \\
        --reference-python .venv-scvi-tools/bin/python --seeds 0 1 2 --jobs 2

Each library trains in its own environment (``make bench-env`` builds scvi-tools' one): this
script runs itself there with ``--worker``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anndata
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _comparison import MAPPING_SIMULATION, ROOT, comparison_row  # noqa: E402

SETTINGS = {"pbmc90": 0.9, "pbmc99": 0.99, "query": None}
LIBRARIES = ("cellvi", "scvi-tools")
UNKNOWN = "Unknown"
#: Figures of a run, and whether higher is better.
FIGURES = {
    "accuracy": True,
    "macro_f1": True,
    "scvi_seconds": False,
    "scanvi_seconds": False,
}


# Labels and scores -----------------------------------------------------------------------


def hide_labels(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Mask of the cells whose label is hidden: ``fraction`` of each type, one kept at least."""
    rng = np.random.default_rng(seed)
    hidden = np.zeros(labels.size, dtype=bool)
    for label in np.unique(labels):
        cells = rng.permutation(np.flatnonzero(labels == label))
        n_kept = max(1, int(round((1 - fraction) * cells.size)))
        hidden[cells[n_kept:]] = True
    return hidden


def accuracy_and_macro_f1(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy, and the F1 score averaged over the labels that are true or predicted."""
    truth, predicted = truth.astype(str), predicted.astype(str)
    scores = []
    for label in np.union1d(truth, predicted):
        tp = np.sum((truth == label) & (predicted == label))
        wrong = np.sum((truth == label) != (predicted == label))
        scores.append(2 * tp / (2 * tp + wrong))
    return {"accuracy": float(np.mean(truth == predicted)), "macro_f1": float(np.mean(scores))}


# Worker: one library, one setting, one seed ----------------------------------------------


def train_scanvi(library, adata: anndata.AnnData, args: argparse.Namespace, batch_key: str | None):
    """scVI on ``adata``, then SCANVI from it on the ``scanvi_labels`` column; timed."""
    train_kwargs = {"accelerator": "cpu", "enable_progress_bar": False}
    library.model.SCVI.setup_anndata(adata, batch_key=batch_key)
    scvi_model = library.model.SCVI(adata)
    start = time.perf_counter()
    scvi_model.train(max_epochs=args.scvi_epochs, **train_kwargs)
    scvi_seconds = time.perf_counter() - start
    model = library.model.SCANVI.from_scvi_model(
        scvi_model, unlabeled_category=UNKNOWN, labels_key="scanvi_labels"
    )
    start = time.perf_counter()
    model.train(
        max_epochs=args.scanvi_epochs, n_samples_per_label=args.n_samples_per_label, **train_kwargs
    )
    seconds = {"scvi_seconds": scvi_seconds, "scanvi_seconds": time.perf_counter() - start}
    return model, seconds


def run_pbmc(library, args: argparse.Namespace) -> dict:
    adata = anndata.read_h5ad(args.data_dir / "pbmc_7k_labeled.h5ad")
    adata = adata[adata.obs["cell_type"].astype(str) != "NA"].copy()
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    hidden = hide_labels(labels, SETTINGS[args.setting], args.seed)
    adata.obs["scanvi_labels"] = np.where(hidden, UNKNOWN, labels)
    library.settings.seed = args.seed
    model, seconds = train_scanvi(library, adata, args, batch_key=None)
    predicted = np.asarray(model.predict(indices=np.flatnonzero(hidden)))
    return {
        **accuracy_and_macro_f1(labels[hidden], predicted),
        **seconds,
        "n_labeled": int((~hidden).sum()),
    }


def run_query(library, args: argparse.Namespace) -> dict:
    if not hasattr(library.model.SCANVI, "load_query_data"):
        return {"skipped": "SCANVI.load_query_data is not available"}
    adata = anndata.read_h5ad(args.simulation)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    in_query = (adata.obs["batch"].astype(str) == "batch_3").to_numpy()
    reference, query = adata[~in_query].copy(), adata[in_query].copy()
    reference.obs["scanvi_labels"] = labels[~in_query]
    library.settings.seed = args.seed
    model, seconds = train_scanvi(library, reference, args, batch_key="batch")
    query.obs["scanvi_labels"] = UNKNOWN
    with tempfile.TemporaryDirectory() as directory:
        model.save(directory, overwrite=True)
        query_model = library.model.SCANVI.load_query_data(query, directory)
    start = time.perf_counter()
    query_model.train(
        max_epochs=args.query_epochs,
        plan_kwargs={"weight_decay": 0.0},
        accelerator="cpu",
        enable_progress_bar=False,
    )
    seconds["query_seconds"] = time.perf_counter() - start
    predicted = np.asarray(query_model.predict())
    return {**accuracy_and_macro_f1(labels[in_query], predicted), **seconds}


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.library == "cellvi":
        import cellvi as library
    else:
        import scvi as library
    result = run_query(library, args) if args.setting == "query" else run_pbmc(library, args)
    result.update(
        library=args.library,
        version=library.__version__,
        setting=args.setting,
        seed=args.seed,
        scvi_epochs=args.scvi_epochs,
        scanvi_epochs=args.scanvi_epochs,
    )
    args.output.write_text(json.dumps(result))


# Driver ----------------------------------------------------------------------------------


def simulation_file(workdir: Path, seed: int) -> Path:
    """The query setting's data set of ``seed``, written once for both libraries."""
    path = workdir / f"simulated-{seed}.h5ad"
    if not path.exists():
        import cellvi

        cellvi.data.simulate(**MAPPING_SIMULATION, seed=seed).write_h5ad(path)
    return path


def run_one(run: tuple[str, str, int], args: argparse.Namespace, workdir: Path) -> dict:
    library, setting, seed = run
    python = args.cellvi_python if library == "cellvi" else args.reference_python
    output = workdir / f"{library}-{setting}-{seed}.json"
    command = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        "--library",
        library,
        "--setting",
        setting,
        "--seed",
        str(seed),
        "--data-dir",
        str(args.data_dir),
        "--scvi-epochs",
        str(args.scvi_epochs),
        "--scanvi-epochs",
        str(args.scanvi_epochs),
        "--query-epochs",
        str(args.query_epochs),
        "--n-samples-per-label",
        str(args.n_samples_per_label),
        "--threads",
        str(args.threads),
        "--output",
        str(output),
    ]
    if setting == "query":
        command += ["--simulation", str(simulation_file(workdir, seed))]
    print(f"training {library} on {setting}, seed {seed} ...", flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(output.read_text())


def summarise(results: list[dict]) -> str:
    """Markdown table: per setting and figure, each library's mean ± sd and the verdict."""
    lines = [
        "| setting | figure | cellvi (mean ± sd) | scvi-tools (mean ± sd) "
        "| cellvi − scvi-tools [95% CI] | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    skipped = sorted(
        {(r["library"], r["setting"], r["skipped"]) for r in results if "skipped" in r}
    )
    for setting in [s for s in SETTINGS if any(r["setting"] == s for r in results)]:
        for figure, higher_is_better in FIGURES.items():
            by_seed = {
                library: {
                    r["seed"]: r[figure]
                    for r in results
                    if r["setting"] == setting and r["library"] == library and figure in r
                }
                for library in LIBRARIES
            }
            if any(not values for values in by_seed.values()):
                continue
            lines.append(comparison_row([setting, figure], by_seed, higher_is_better))
    lines += [f"\n{library} skipped {setting}: {why}" for library, setting, why in skipped]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference-python", help="python of the scvi-tools environment")
    parser.add_argument("--cellvi-python", default=sys.executable)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--scvi-epochs", type=int, default=100)
    parser.add_argument("--scanvi-epochs", type=int, default=20)
    parser.add_argument("--query-epochs", type=int, default=50)
    parser.add_argument("--n-samples-per-label", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (timings then share)")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks" / "results" / "scanvi.json"
    )
    parser.add_argument("--summarise", nargs="+", type=Path, metavar="RESULTS")
    # Worker mode: one run inside one library's environment.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--library", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--setting", choices=list(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--simulation", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.worker and not args.summarise:
        if args.reference_python is None and "scvi-tools" in args.libraries:
            parser.error("--reference-python (the scvi-tools environment) is required.")
        if not args.data_dir.is_dir():
            sys.exit(f"No data directory at {args.data_dir} (see ../shared/data/README.md).")
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    if args.summarise:
        results = [r for path in args.summarise for r in json.loads(path.read_text())]
    else:
        runs = [
            (library, setting, seed)
            for setting in args.settings
            for seed in args.seeds
            for library in args.libraries
        ]
        with tempfile.TemporaryDirectory() as workdir:
            if "query" in args.settings:
                for seed in args.seeds:  # before the runs, which read them in parallel
                    simulation_file(Path(workdir), seed)
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                results = list(pool.map(lambda run: run_one(run, args, Path(workdir)), runs))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1))
        print(
            f"\n{len(args.seeds)} seeds; scVI {args.scvi_epochs} epochs, then SCANVI "
            f"{args.scanvi_epochs} epochs ({args.n_samples_per_label} labeled cells per label "
            f"and epoch); query {args.query_epochs} epochs; {args.threads} torch thread(s) per "
            f"run, {args.jobs} run(s) at once\n"
        )
    print(summarise(results))


if __name__ == "__main__":
    main()
