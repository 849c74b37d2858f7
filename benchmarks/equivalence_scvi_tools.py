"""Do scvi-tools' and cellvi's SCVI train and answer queries by the same algorithm?

A diagnostic for the kang comparison, in four checks (80% training cells of the benchmark's
split):

1. replay: each library's ``SCVI.train()`` is recorded step by step (the minibatch, the KL
   weight and torch's random state as each training step starts) and then replayed from the
   same initial weights by a plain Adam loop (lr 1e-3, eps 0.01, weight decay 1e-6). The
   largest parameter difference says whether ``train()`` does anything beyond that textbook
   loop: extra or missing steps, another loss scale, clipping, a scheduler.
2. queries: scvi-tools' trained weights are copied into a cellvi SCVI on the same AnnData;
   held-out ELBO, reconstruction loss and latent means from both libraries' queries.
3. one step: from those weights, the same minibatch and the same random state, the training
   loss and every gradient in both modules.
4. initial weights: for each of several seeds, which tensors both libraries draw as the same
   numbers, and the spread of each tensor in both.

It needs both libraries in one environment: scvi-tools' (``make bench-env``) with cellvi on
the path.

    PYTHONPATH=src .venv-scvi-tools/bin/python benchmarks/equivalence_scvi_tools.py --epochs 3
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Self

import anndata
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _quality_worker import DATASETS, split
from transplant_scvi_tools import renamed_weights, transplant

ROOT = Path(__file__).resolve().parent.parent
Step = tuple[dict[str, Any], float, torch.Tensor]


class StepRecorder:
    """While active, record what each ``training_step`` of a plan class starts from."""

    def __init__(self, plan_cls: type) -> None:
        self.plan_cls = plan_cls
        self.steps: list[Step] = []

    def __enter__(self) -> Self:
        self.original = original = self.plan_cls.training_step
        steps = self.steps

        def recording(plan: Any, batch: dict[str, Any], batch_idx: int) -> Any:
            copied = {key: value.detach().clone() for key, value in batch.items()}
            steps.append((copied, float(plan.kl_weight), torch.get_rng_state()))
            return original(plan, batch, batch_idx)

        self.plan_cls.training_step = recording
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.plan_cls.training_step = self.original


def replay(module: torch.nn.Module, steps: list[Step], fused: bool) -> None:
    """Run the recorded steps through a plain Adam loop, each from its recorded random state."""
    module.train()
    optimizer = torch.optim.Adam(
        module.parameters(), lr=1e-3, eps=0.01, weight_decay=1e-6, fused=fused
    )
    for batch, kl_weight, rng_state in steps:
        torch.set_rng_state(rng_state)
        optimizer.zero_grad()
        _, _, losses = module(batch, loss_kwargs={"kl_weight": kl_weight})
        losses.loss.backward()
        optimizer.step()
    module.eval()


def largest_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference over the tensors both dicts name."""
    shared = first.keys() & second.keys()
    return max(float((first[name] - second[name]).abs().max()) for name in shared)


def build_scvi(library: Any, adata: anndata.AnnData, seed: int) -> Any:
    """A library's SCVI on ``adata`` (set up with the condition as batch), seeded."""
    library.settings.seed = seed
    library.model.SCVI.setup_anndata(adata, batch_key="condition")
    return library.model.SCVI(adata)


def train_and_replay(
    library: Any, adata: anndata.AnnData, seed: int, epochs: int, fused: bool
) -> tuple[Any, list[Step], float]:
    """Train a library's SCVI while recording, replay the steps; the largest weight gap."""
    train, valid, test = split(adata.n_obs, seed)
    model = build_scvi(library, adata, seed)
    initial = copy.deepcopy(model.module)
    with StepRecorder(library.train.TrainingPlan) as recorder:
        model.train(
            max_epochs=epochs,
            batch_size=128,
            accelerator="cpu",
            datasplitter_kwargs={"external_indexing": [train, valid, test]},
            enable_progress_bar=False,
        )
    replay(initial, recorder.steps, fused)
    gap = largest_difference(model.module.state_dict(), initial.state_dict())
    return model, recorder.steps, gap


def compare_queries(reference: Any, candidate: Any, test: np.ndarray) -> None:
    """Held-out ELBO, reconstruction loss and latent means of both models, same random state."""
    answers = {}
    for name, model in (("scvi-tools", reference), ("cellvi", candidate)):
        torch.manual_seed(0)
        elbo = np.asarray(model.get_elbo(indices=test, return_mean=False)).mean()
        torch.manual_seed(0)
        error = model.get_reconstruction_error(indices=test, return_mean=False)
        latent = model.get_latent_representation(indices=test)
        answers[name] = (elbo, np.asarray(error["reconstruction_loss"]).mean(), latent)
        print(f"  {name:<10} held-out ELBO {elbo:.4f}, reconstruction loss {answers[name][1]:.4f}")
    latent_gap = np.abs(answers["scvi-tools"][2] - answers["cellvi"][2]).max()
    print(f"  largest latent-mean difference: {latent_gap:.2e}")


def compare_one_step(reference: Any, candidate: Any, step: Step) -> None:
    """Training loss and gradients of both modules on one minibatch from one random state."""
    batch, kl_weight, rng_state = step
    gradients, losses = [], []
    for module in (reference.module, candidate.module):
        module.train()
        module.zero_grad()
        torch.set_rng_state(rng_state)
        _, _, output = module(batch, loss_kwargs={"kl_weight": kl_weight})
        output.loss.backward()
        losses.append(float(output.loss.detach()))
        gradients.append({name: p.grad for name, p in module.named_parameters()})
        module.eval()
    names = list(candidate.module.state_dict())
    reference_gradients = renamed_weights(gradients[0], names, n_latent=10)
    gap = largest_difference(reference_gradients, gradients[1])
    largest = max(float(gradient.abs().max()) for gradient in gradients[1].values())
    print(
        f"  loss {losses[0]:.4f} vs {losses[1]:.4f}; largest gradient difference {gap:.2e} "
        f"(largest gradient {largest:.2e})"
    )


def compare_initial_weights(
    reference: Any, candidate: Any, adata: anndata.AnnData, seeds: list[int]
) -> None:
    """Per random tensor: seeds on which both libraries draw the same numbers; mean spreads."""
    rows: dict[str, list[tuple[bool, float, float]]] = {}
    for seed in seeds:
        candidate_weights = build_scvi(candidate, adata.copy(), seed).module.state_dict()
        reference_module = build_scvi(reference, adata.copy(), seed).module
        reference_weights = renamed_weights(
            reference_module.state_dict(), list(candidate_weights), n_latent=10
        )
        for name in reference_weights.keys() & candidate_weights.keys():
            first, second = reference_weights[name].float(), candidate_weights[name].float()
            if first.numel() > 1 and float(first.std()) > 0:
                rows.setdefault(name, []).append(
                    (torch.equal(first, second), float(first.std()), float(second.std()))
                )
    for name, values in sorted(rows.items()):
        same = sum(equal for equal, _, _ in values)
        spreads = np.mean([(first, second) for _, first, second in values], axis=0)
        print(
            f"  {name:<45} same numbers for {same}/{len(values)} seeds, "
            f"sd {spreads[0]:.4f} vs {spreads[1]:.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--init-seeds", nargs="+", type=int, default=list(range(8)))
    args = parser.parse_args()
    import scvi

    import cellvi

    torch.set_num_threads(1)
    adata = anndata.read_h5ad(args.data_dir / DATASETS["kang"]["file"])
    print(f"1. train() against a plain Adam replay of its own steps ({args.epochs} epochs)")
    trained = {}
    for name, library, fused in (("scvi-tools", scvi, False), ("cellvi", cellvi, True)):
        model, steps, gap = train_and_replay(library, adata.copy(), args.seed, args.epochs, fused)
        trained[name] = (model, steps)
        kl_weights = sorted({kl for _, kl, _ in steps})
        print(
            f"  {name:<10} {len(steps)} steps, "
            f"KL weights {kl_weights[0]:.4f}-{kl_weights[-1]:.4f}, "
            f"largest weight gap {gap:.2e}"
        )

    reference, steps = trained["scvi-tools"]
    candidate_adata = adata.copy()
    candidate = build_scvi(cellvi, candidate_adata, args.seed)
    transplant(reference.module, candidate.module, n_latent=10)
    candidate.is_trained_ = True
    candidate.module.eval()
    print("2. queries of scvi-tools' trained weights in both libraries")
    compare_queries(reference, candidate, split(adata.n_obs, args.seed)[2])
    print("3. one training step from those weights, same minibatch and random state")
    compare_one_step(reference, candidate, steps[-1])
    print(f"4. initial weights, seeds {args.init_seeds} (scvi-tools vs cellvi)")
    compare_initial_weights(scvi, cellvi, adata, args.init_seeds)


if __name__ == "__main__":
    main()
