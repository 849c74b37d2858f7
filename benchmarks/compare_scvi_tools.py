"""Compare cellvi's SCVI with scvi-tools' on real data: same split, settings and epochs.

Each library trains in its own environment (``make bench-env`` builds scvi-tools' one);
this script runs both, several seeds each, and prints a table of held-out ELBO, marginal
log-likelihood, 15-NN cell-type accuracy of the latent (pbmc) and batch mixing (kang), with
the 95% interval of the difference and whether cellvi matches scvi-tools within noise.

    .venv/bin/python benchmarks/compare_scvi_tools.py \
        --reference-python .venv-scvi-tools/bin/python --seeds 0 1 2 --max-epochs 100 --jobs 2

``--summarise results/a.json results/b.json`` prints the table of earlier runs, merged.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import anndata
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _comparison import comparison_parser, load_results, parse_comparison_args, run_all, summarise  # noqa: E402
from _latent_metrics import batch_mixing_entropy, knn_accuracy  # noqa: E402
from _quality_worker import DATASETS  # noqa: E402


def add_latent_metrics(result: dict, adata: anndata.AnnData) -> None:
    """Replace a run's latent and indices by the metrics of its dataset."""
    latent = result.pop("latent")
    train, test = np.asarray(result.pop("train_indices")), np.asarray(result.pop("test_indices"))
    if "cell_type" in adata.obs:
        labels = adata.obs["cell_type"].astype(str).to_numpy()
        known = labels != "NA"
        result["knn_accuracy"] = knn_accuracy(
            latent, labels, train[known[train]], test[known[test]]
        )
    if "condition" in adata.obs:
        result["batch_mixing"] = batch_mixing_entropy(
            latent, adata.obs["condition"].astype(str).to_numpy()
        )


def main() -> None:
    parser = comparison_parser(__doc__, "quality.json")
    parser.add_argument("--datasets", nargs="+", default=["pbmc", "kang"], choices=list(DATASETS))
    args = parse_comparison_args(parser)
    if args.summarise:
        print(summarise(load_results(args.summarise)))
        return

    cells = {
        dataset: anndata.read_h5ad(args.data_dir / DATASETS[dataset]["file"], backed="r")
        for dataset in args.datasets
    }
    runs = [
        (library, dataset, seed)
        for dataset in args.datasets
        for seed in args.seeds
        for library in args.libraries
    ]
    with tempfile.TemporaryDirectory() as workdir:
        results = run_all(
            runs,
            "SCVI",
            args,
            Path(workdir),
            lambda result: add_latent_metrics(result, cells[result["dataset"]]),
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1))
    print(
        f"\n{len(args.seeds)} seeds, {args.max_epochs} epochs, batch size 128, "
        f"{args.threads} torch "
        f"thread(s) per run, {args.jobs} run(s) at once, held-out = 10% test cells\n"
    )
    print(summarise(results))


if __name__ == "__main__":
    main()
