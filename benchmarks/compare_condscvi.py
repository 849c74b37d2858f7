"""Compare cellvi's CondSCVI with scvi-tools' on pbmc_7k_labeled: same split, settings, epochs.

Both libraries train their CondSCVI (labels: ``cell_type``) in their own environment, several
seeds each; the table gives the held-out ELBO and reconstruction NLL per cell (scvi-tools' VAEC
has no marginal likelihood), with the 95% interval of the difference, then one row per run.

    .venv/bin/python benchmarks/compare_condscvi.py \
        --reference-python .venv-scvi-tools/bin/python --seeds 0 1 2 --max-epochs 100 --jobs 2
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _comparison import comparison_parser, load_results, parse_comparison_args, run_all, summarise  # noqa: E402


def drop_latent(result: dict) -> None:
    """CondSCVI is judged on likelihoods alone."""
    for key in ("latent", "train_indices", "test_indices"):
        del result[key]


def per_seed_table(results: list[dict]) -> str:
    """One row per run."""
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
    if args.summarise:
        results = load_results(args.summarise)
    else:
        runs = [(library, "pbmc", seed) for seed in args.seeds for library in args.libraries]
        with tempfile.TemporaryDirectory() as workdir:
            results = run_all(runs, "CondSCVI", args, Path(workdir), drop_latent)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1))
        print(
            f"\nCondSCVI on pbmc_7k_labeled (labels: cell_type), {len(args.seeds)} seeds, "
            f"{args.max_epochs} epochs, batch size 128, {args.threads} torch thread(s) per run, "
            f"{args.jobs} run(s) at once, held-out = 10% test cells\n"
        )
    print(summarise(results))
    print()
    print(per_seed_table(results))


if __name__ == "__main__":
    main()
