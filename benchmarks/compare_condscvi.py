"""Compare cellvi's CondSCVI with scvi-tools' on pbmc_7k_labeled: same split, epochs, batch size.

Each library trains in its own environment through ``_quality_worker.py --model CondSCVI``
(labels: ``cell_type``; 80/10/10 split per seed; held-out = the 10% test cells). scvi-tools'
VAEC has no marginal likelihood, so the figures are the held-out ELBO and reconstruction NLL.

    .venv/bin/python benchmarks/compare_condscvi.py \
        --reference-python .venv-scvi-tools/bin/python --seeds 0 1 2 --max-epochs 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from compare_scvi_tools import ROOT, comparison_parser, parse_comparison_args, summarise  # noqa: E402

LIBRARIES = ("cellvi", "scvi-tools")


def run_worker(python: str, library: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    """Train one library's CondSCVI on pbmc for one seed; return its figures."""
    output = workdir / f"{library}-{seed}.json"
    command = [
        python, str(ROOT / "benchmarks" / "_quality_worker.py"), "--model", "CondSCVI",
        "--library", library, "--dataset", "pbmc", "--data-dir", str(args.data_dir),
        "--seed", str(seed), "--max-epochs", str(args.max_epochs), "--threads", str(args.threads),
        "--output", str(output), "--latent", str(workdir / f"{library}-{seed}.npy"),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    result = json.loads(output.read_text())
    del result["train_indices"], result["test_indices"]
    return result


def per_seed_table(results: list[dict]) -> str:
    """One row per run, with the reconstruction NLL that ``summarise`` does not list."""
    lines = [
        "| seed | library | held-out ELBO | held-out reconstruction NLL | train s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in sorted(results, key=lambda r: (r["seed"], r["library"])):
        lines.append(
            f"| {r['seed']} | {r['library']} {r['version']} | {r['heldout_elbo']:.3f} | "
            f"{r['heldout_reconstruction_loss']:.3f} | {r['train_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_comparison_args(comparison_parser(__doc__, "condscvi_quality.json"))

    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            for library, python in zip(LIBRARIES, (args.cellvi_python, args.reference_python)):
                print(f"training {library} CondSCVI on pbmc, seed {seed} ...", flush=True)
                results.append(run_worker(python, library, seed, args, Path(workdir)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1))
    print(
        f"\nCondSCVI on pbmc_7k_labeled (labels: cell_type), {len(args.seeds)} seeds, "
        f"{args.max_epochs} epochs, batch size 128, {args.threads} torch thread(s), "
        "held-out = 10% test cells\n"
    )
    print(summarise(results))
    print()
    print(per_seed_table(results))


if __name__ == "__main__":
    main()
