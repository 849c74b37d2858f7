"""Compare cellvi's SCVI with scvi-tools' on real data: same split, settings and epochs.

Each library trains in its own environment (``make bench-env`` builds scvi-tools' one);
this script runs both, several seeds each, and prints a table of held-out ELBO and marginal
log-likelihood, and of figures of each latent: on pbmc (labels ``cell_type``, 'NA' cells left
out) scib-metrics' conservation figures and a 15-NN cell-type accuracy of the test cells; on
kang (batch ``condition``) scib-metrics' integration figures. Each row gives the 95% interval
of the difference and whether cellvi matches scvi-tools within noise. The scib-metrics
figures need the ``bench`` extra in cellvi's environment: ``pip install -e ".[bench]"``.

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
from _latent_metrics import (  # noqa: E402
    conservation_metrics,
    integration_metrics,
    knn_accuracy,
    pre_integration_embedding,
    require_bench_extra,
)
from _quality_worker import DATASETS  # noqa: E402


def add_latent_metrics(
    result: dict, adata: anndata.AnnData, pre_integration: np.ndarray | None = None
) -> None:
    """Replace a run's latent and indices by the figures of its dataset."""
    latent = result.pop("latent")
    train, test = np.asarray(result.pop("train_indices")), np.asarray(result.pop("test_indices"))
    if "cell_type" in adata.obs:
        labels = adata.obs["cell_type"].astype(str).to_numpy()
        known = labels != "NA"
        result["knn_accuracy"] = knn_accuracy(
            latent, labels, train[known[train]], test[known[test]]
        )
        result.update(conservation_metrics(latent[known], labels[known]))
    if "condition" in adata.obs:
        batches = adata.obs["condition"].astype(str).to_numpy()
        result.update(integration_metrics(latent, batches, pre_integration))


def main() -> None:
    parser = comparison_parser(__doc__, "quality.json")
    parser.add_argument("--datasets", nargs="+", default=["pbmc", "kang"], choices=list(DATASETS))
    args = parse_comparison_args(parser)
    if args.summarise:
        print(summarise(load_results(args.summarise)))
        return

    require_bench_extra()  # before any training: say how to install scib-metrics
    cells = {
        dataset: anndata.read_h5ad(args.data_dir / DATASETS[dataset]["file"])
        for dataset in args.datasets
    }
    # The unintegrated embedding pcr_comparison compares each latent with, once per dataset.
    pre_integration = {
        dataset: pre_integration_embedding(adata) if "condition" in adata.obs else None
        for dataset, adata in cells.items()
    }
    runs = [
        (library, dataset, seed)
        for dataset in args.datasets
        for seed in args.seeds
        for library in args.libraries
    ]
    with tempfile.TemporaryDirectory() as workdir:
        results = run_all(runs, "SCVI", args, Path(workdir), lambda result: None)
    # After every training, one run at a time: jax and numba (scib-metrics) would otherwise
    # share the cores with the runs whose training time is measured.
    print("computing the latent figures ...", flush=True)
    for result in results:
        add_latent_metrics(result, cells[result["dataset"]], pre_integration[result["dataset"]])
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
