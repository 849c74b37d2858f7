"""Differential expression of cellvi against scvi-tools 1.4.2: accuracy on known truth, agreement
on real data, and wall time.

Each library trains SCVI with the same settings in its own environment (``make bench-env``
builds scvi-tools' one) and runs the same differential expression calls:

- ``simulated``: ``cellvi.data.simulate()`` (two batches, several cell types; one data set per
  seed, written once and read by both libraries). ``type_0`` vs ``type_1`` in change mode;
  the true log2 fold changes are ``log2(p0 / p1)`` of the true profiles
  ``varm["type_profiles"]``, and a gene is truly DE when ``|true LFC| >= delta`` (0.25, the
  test's own threshold). Figures: AUROC and AUPRC of ``proba_de``, the false discovery rate
  achieved by the ``is_de_fdr_0.05`` calls, the mean absolute error of ``lfc_mean``.
- ``kang``: ``../shared/data/kang_ifnb_2k.h5ad``, ``stim`` vs ``ctrl``. Figures: the Spearman
  correlation of ``lfc_mean`` between the libraries (same seed), the overlap of their top 50
  up-regulated genes, and how many of a fixed list of interferon-stimulated genes each top 50
  holds.

Wall times and process CPU times (each the best of ``--repeats``) of
``differential_expression`` (vanilla and change) and of ``get_normalized_expression`` on all
cells are taken in the worker after training; on a shared machine the CPU time is the steadier
of the two. Compare
them only from runs with ``--jobs 1``: with more jobs one library's timed calls overlap the
other's training. Timings do not depend on how long the model trained, so a timing run can
use few epochs (``--max-epochs 3``) and larger simulated data (``--n-cells``,
``--n-cell-types``: the posterior sampling of large groups is where the libraries differ).

    .venv/bin/python benchmarks/compare_de.py \\
        --reference-python .venv-scvi-tools/bin/python --seeds 0 1 2 --max-epochs 40
    .venv/bin/python benchmarks/compare_de.py --reference-python .venv-scvi-tools/bin/python \\
        --datasets simulated --n-cells 24000 --n-cell-types 2 --max-epochs 2 --jobs 1

``--summarise results/de.json`` prints the tables (and draws the figures) of an earlier run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _comparison import comparison_parser, comparison_row  # noqa: E402

ISGS = (
    "ISG15 IFI6 IFIT1 IFIT3 MX1 ISG20 OAS1 IFITM3 IFIT2 IFI44L RSAD2 MX2 OAS2 OAS3 HERC5 IFI27 "
    "LY6E XAF1 IFIT5 STAT1 IRF7 BST2 SAMD9L EPSTI1 CMPK2 OASL IFI35 PLSCR1 TNFSF10 APOBEC3A"
).split()
DELTA = 0.25
# The simulated data: large enough groups that the posterior sampling is what is timed.
SIMULATION = {
    "n_cells": 6000,
    "n_genes": 1000,
    "n_batches": 2,
    "n_cell_types": 3,
    "marker_fraction": 0.15,
    "type_effect_strength": 1.0,
    "batch_effect_strength": 0.3,
}
# Metric: higher is better.
SIMULATED_METRICS = {"auroc": True, "auprc": True, "achieved_fdr": False, "lfc_mae": False}
TIMINGS = tuple(
    f"{call}{clock}_seconds"
    for clock in ("", "_cpu")
    for call in ("de_vanilla", "de_change", "normalized_expression")
)
WALL_TIMINGS = TIMINGS[:3]


# Worker (runs in either library's environment) -------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """Train one library's SCVI on one data set and time its DE calls; write a JSON."""
    import anndata
    import torch

    if args.library == "cellvi":
        import cellvi as scvi
    else:
        import scvi
    torch.set_num_threads(args.threads)
    scvi.settings.seed = args.seed
    adata = anndata.read_h5ad(args.data)
    if args.dataset == "simulated":
        setup, groups = {"batch_key": "batch"}, ("cell_type", "type_0", "type_1")
    else:
        setup, groups = {}, ("condition", "stim", "ctrl")
    scvi.model.SCVI.setup_anndata(adata, **setup)
    model = scvi.model.SCVI(adata)
    start = time.perf_counter()
    model.train(max_epochs=args.max_epochs, accelerator="cpu", enable_progress_bar=False)
    result = {
        "library": args.library,
        "dataset": args.dataset,
        "seed": args.seed,
        "train_seconds": time.perf_counter() - start,
    }
    groupby, group1, group2 = groups
    tables = {}

    def timed(name: str, call: Callable[[], Any]) -> Any:
        # Best of the repeats, as wall time and as this process's CPU time: on a shared
        # machine the CPU time is the steadier of the two (other jobs inflate the wall time).
        walls, cpus = [], []
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            value = call()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        result[f"{name}_seconds"], result[f"{name}_cpu_seconds"] = min(walls), min(cpus)
        return value

    for mode in ("vanilla", "change"):
        tables[mode] = timed(
            f"de_{mode}",
            lambda mode=mode: model.differential_expression(
                groupby=groupby, group1=group1, group2=group2, mode=mode, silent=True
            ),
        )
    timed("normalized_expression", model.get_normalized_expression)
    change = tables["change"].loc[adata.var_names]
    result["genes"] = adata.var_names.tolist()
    for column in ("proba_de", "lfc_mean"):
        result[column] = change[column].astype(float).tolist()
    result["is_de"] = change["is_de_fdr_0.05"].astype(bool).tolist()
    result["bayes_factor"] = tables["vanilla"].loc[adata.var_names, "bayes_factor"].tolist()
    Path(args.output).write_text(json.dumps(result))


# Figures of merit ------------------------------------------------------------------------------


def simulated_metrics(result: dict, true_lfc: np.ndarray) -> dict[str, float]:
    """AUROC / AUPRC of ``proba_de``, achieved FDR of the calls, LFC error, against the truth."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    truth = np.abs(true_lfc) >= DELTA
    proba = np.asarray(result["proba_de"])
    called = np.asarray(result["is_de"])
    return {
        "auroc": float(roc_auc_score(truth, proba)),
        "auprc": float(average_precision_score(truth, proba)),
        "achieved_fdr": float(np.mean(~truth[called])) if called.any() else 0.0,
        "n_called": int(called.sum()),
        "lfc_mae": float(np.mean(np.abs(np.asarray(result["lfc_mean"]) - true_lfc))),
    }


def kang_agreement(cellvi: dict, reference: dict) -> dict[str, float]:
    """Spearman of LFC means, top-50 overlap and ISGs in each top 50, for one seed."""
    from scipy.stats import spearmanr

    genes = np.asarray(cellvi["genes"])
    lfc_c, lfc_r = np.asarray(cellvi["lfc_mean"]), np.asarray(reference["lfc_mean"])
    top_c = set(genes[np.argsort(-lfc_c)[:50]])
    top_r = set(genes[np.argsort(-lfc_r)[:50]])
    return {
        "spearman_lfc": float(spearmanr(lfc_c, lfc_r).statistic),
        "top50_overlap": len(top_c & top_r),
        "isgs_top50_cellvi": len(top_c & set(ISGS)),
        "isgs_top50_scvi_tools": len(top_r & set(ISGS)),
        "isgs_known": len(set(ISGS) & set(genes)),
    }


# Driver ----------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> list[dict]:
    import anndata

    import cellvi

    pythons = {"cellvi": args.cellvi_python, "scvi-tools": args.reference_python}
    jobs, truths = [], {}
    for seed in args.seeds:
        for dataset in args.datasets:
            if dataset == "simulated":
                path = workdir / f"simulated-{seed}.h5ad"
                sizes = {
                    "n_cells": args.n_cells,
                    "n_genes": args.n_genes,
                    "n_cell_types": args.n_cell_types,
                }
                adata = cellvi.data.simulate(**{**SIMULATION, **sizes}, seed=seed)
                profiles = adata.varm["type_profiles"]
                truths[seed] = np.log2(profiles[:, 0] / profiles[:, 1]).tolist()
                adata.write_h5ad(path)
            else:
                path = args.data_dir / "kang_ifnb_2k.h5ad"
                anndata.read_h5ad(path, backed="r").file.close()  # fails early if absent
            for library in args.libraries:
                jobs.append((library, dataset, seed, path))

    def one(job: tuple) -> dict:
        library, dataset, seed, path = job
        out = workdir / f"{library}-{dataset}-{seed}.json"
        print(f"{library} on {dataset}, seed {seed} ...", flush=True)
        command = [
            pythons[library], __file__, "--worker", "--library", library, "--dataset", dataset,
            "--data", str(path), "--seed", str(seed), "--max-epochs", str(args.max_epochs),
            "--threads", str(args.threads), "--repeats", str(args.repeats), "--output", str(out),
        ]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text())
        if dataset == "simulated":
            result["true_lfc"] = truths[seed]
        return result

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(pool.map(one, jobs))


def _by_seed(results: list[dict], library: str, dataset: str, metric: str) -> dict[int, float]:
    return {
        r["seed"]: r[metric]
        for r in results
        if r["library"] == library and r["dataset"] == dataset and metric in r
    }


def tables(results: list[dict]) -> str:
    """Markdown tables: simulated accuracy, kang agreement, wall times."""
    for result in results:
        if result["dataset"] == "simulated" and "auroc" not in result:
            result.update(simulated_metrics(result, np.asarray(result["true_lfc"])))
    lines = [
        "| dataset | metric | cellvi (mean ± sd) | scvi-tools (mean ± sd) "
        "| cellvi − scvi-tools [95% CI] | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows = [("simulated", m, hib) for m, hib in SIMULATED_METRICS.items()]
    rows += [(d, t, False) for d in ("simulated", "kang") for t in TIMINGS]
    for dataset, metric, higher_is_better in rows:
        by_seed = {lib: _by_seed(results, lib, dataset, metric) for lib in LIBRARIES}
        if any(not values for values in by_seed.values()):
            continue
        lines.append(comparison_row([dataset, metric], by_seed, higher_is_better))
    speedups = []
    for dataset in ("simulated", "kang"):
        for metric in TIMINGS:
            c = _by_seed(results, "cellvi", dataset, metric)
            r = _by_seed(results, "scvi-tools", dataset, metric)
            ratios = [r[s] / c[s] for s in sorted(set(c) & set(r))]
            if ratios:
                speedups.append(
                    f"| {dataset} | {metric} | {np.mean(ratios):.2f}x "
                    f"(min {np.min(ratios):.2f}x, max {np.max(ratios):.2f}x, n={len(ratios)}) |"
                )
    if speedups:
        lines += ["", "| dataset | timing | scvi-tools / cellvi |", "| --- | --- | --- |"]
        lines += speedups
    kang = []
    for seed in sorted({r["seed"] for r in results if r["dataset"] == "kang"}):
        pair = {r["library"]: r for r in results if r["dataset"] == "kang" and r["seed"] == seed}
        if len(pair) == 2:
            kang.append({"seed": seed, **kang_agreement(pair["cellvi"], pair["scvi-tools"])})
    if kang:
        names = [name for name in kang[0] if name != "seed"]
        lines += ["", "| kang seed | " + " | ".join(names) + " |"]
        lines += ["| --- |" + " --- |" * len(names)]
        lines += [
            f"| {row['seed']} | " + " | ".join(f"{row[n]:.3g}" for n in names) + " |"
            for row in kang
        ]
    return "\n".join(lines)


def figures(results: list[dict], directory: Path) -> list[Path]:
    """Accuracy per seed, kang LFC scatter, and wall times, as PNG files in ``directory``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    simulated = [r for r in results if r["dataset"] == "simulated" and "auroc" in r]
    if simulated:
        fig, axes = plt.subplots(1, len(SIMULATED_METRICS), figsize=(14, 3.2))
        for ax, metric in zip(axes, SIMULATED_METRICS, strict=True):
            for i, library in enumerate(LIBRARIES):
                values = list(_by_seed(results, library, "simulated", metric).values())
                ax.scatter(np.full(len(values), i), values, label=library)
            ax.set_xticks(range(len(LIBRARIES)), LIBRARIES)
            ax.set_title(metric)
        if "achieved_fdr" in SIMULATED_METRICS:
            axes[list(SIMULATED_METRICS).index("achieved_fdr")].axhline(0.05, ls="--", c="k")
        fig.tight_layout()
        written.append(directory / "de_simulated_accuracy.png")
        fig.savefig(written[-1], dpi=100)
    pairs = {}
    for r in results:
        if r["dataset"] == "kang":
            pairs.setdefault(r["seed"], {})[r["library"]] = r
    pairs = {s: p for s, p in pairs.items() if len(p) == 2}
    if pairs:
        seed = min(pairs)
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        c, r = pairs[seed]["cellvi"], pairs[seed]["scvi-tools"]
        ax.scatter(r["lfc_mean"], c["lfc_mean"], s=3, alpha=0.4)
        isg = np.isin(c["genes"], ISGS)
        ax.scatter(np.asarray(r["lfc_mean"])[isg], np.asarray(c["lfc_mean"])[isg], s=8, c="r",
                   label="ISGs")  # fmt: skip
        ax.set_xlabel("scvi-tools lfc_mean")
        ax.set_ylabel("cellvi lfc_mean")
        ax.set_title(f"kang stim vs ctrl, seed {seed}")
        ax.legend()
        fig.tight_layout()
        written.append(directory / "de_kang_lfc.png")
        fig.savefig(written[-1], dpi=100)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, dataset in zip(axes, ("simulated", "kang"), strict=True):
        for offset, library in ((-0.2, "cellvi"), (0.2, "scvi-tools")):
            means = [
                np.mean(list(_by_seed(results, library, dataset, t).values()) or [np.nan])
                for t in WALL_TIMINGS
            ]
            ax.bar(np.arange(len(WALL_TIMINGS)) + offset, means, width=0.4, label=library)
        ax.set_xticks(range(len(WALL_TIMINGS)), ["DE vanilla", "DE change", "normalized expr."])
        ax.set_ylabel("seconds")
        ax.set_title(dataset)
        ax.legend()
    fig.tight_layout()
    written.append(directory / "de_wall_times.png")
    fig.savefig(written[-1], dpi=100)
    return written


LIBRARIES = ("cellvi", "scvi-tools")


def main() -> None:
    if "--worker" in sys.argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--worker", action="store_true")
        for name in ("--library", "--dataset", "--data", "--output"):
            parser.add_argument(name, required=True)
        for name in ("--seed", "--max-epochs", "--threads", "--repeats"):
            parser.add_argument(name, type=int, required=True)
        worker(parser.parse_args())
        return
    parser = comparison_parser(__doc__, "de.json")
    parser.add_argument("--datasets", nargs="+", default=["simulated", "kang"])
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats (best kept)")
    parser.add_argument("--n-cells", type=int, default=SIMULATION["n_cells"])
    parser.add_argument("--n-genes", type=int, default=SIMULATION["n_genes"])
    parser.add_argument("--n-cell-types", type=int, default=SIMULATION["n_cell_types"])
    args = parser.parse_args()
    if args.summarise:
        results = [r for path in args.summarise for r in json.loads(path.read_text())]
    else:
        if args.reference_python is None and "scvi-tools" in args.libraries:
            parser.error("--reference-python (the scvi-tools environment) is required.")
        with tempfile.TemporaryDirectory() as workdir:
            results = run(args, Path(workdir))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results))
        print(f"results in {args.output}")
    print(tables(results))
    output_dir = (args.summarise[0] if args.summarise else args.output).parent
    for path in figures(results, output_dir):
        print(f"figure: {path}")


if __name__ == "__main__":
    main()
