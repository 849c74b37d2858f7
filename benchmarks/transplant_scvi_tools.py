"""Train scvi-tools' VAE and cellvi's VAE from the same weights, on the same minibatches.

A diagnostic for the kang batch-mixing comparison: scvi-tools' initial weights are copied into
cellvi's VAE, then both modules run the same plain torch loop (Adam, lr 1e-3, eps 0.01, weight
decay 1e-6, KL warm-up over 400 epochs, batch 128, the benchmark's 80% training cells, one
shared minibatch order and random stream). Equal figures mean the two modules compute the same
thing, so a gap between the libraries' ``train()`` lies outside the module.

It needs both libraries in one environment: scvi-tools' (``make bench-env``) with cellvi on the
path.

    PYTHONPATH=src .venv-scvi-tools/bin/python benchmarks/transplant_scvi_tools.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anndata
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _latent_metrics import batch_mixing_entropy
from _quality_worker import split

ROOT = Path(__file__).resolve().parent.parent


def renamed_weights(
    weights: dict[str, torch.Tensor], target_names: list[str], n_latent: int
) -> dict[str, torch.Tensor]:
    """scvi-tools VAE tensors (one hidden layer, one-hot batch) under cellvi's VAE names.

    Works for any per-parameter tensors (weights or their gradients); names missing from
    ``weights`` are left out.
    """
    renamed = {"px_r": weights["px_r"][None]}
    for name in target_names:
        legacy = name.replace("linears.0.", "fc_layers.Layer 0.0.").replace(
            "transforms.0.0.", "fc_layers.Layer 0.1."
        )
        if legacy in weights and name not in renamed:
            renamed[name] = weights[legacy]
    # scvi-tools concatenates [z, one-hot batch] into one Linear; cellvi keeps the batch
    # columns as a lookup table, one row per batch.
    decoder_weight = weights["decoder.px_decoder.fc_layers.Layer 0.0.weight"]
    renamed["decoder.px_decoder.linears.0.weight"] = decoder_weight[:, :n_latent]
    renamed["decoder.px_decoder.linears.0.cat_weights.0"] = decoder_weight[
        :, n_latent:
    ].T.contiguous()
    return renamed


def transplant(source: torch.nn.Module, target: torch.nn.Module, n_latent: int) -> None:
    """Copy scvi-tools' VAE weights (one hidden layer, one-hot batch) into cellvi's VAE."""
    target.load_state_dict(
        renamed_weights(source.state_dict(), list(target.state_dict()), n_latent)
    )


def train(
    module: torch.nn.Module,
    counts: torch.Tensor,
    batches: torch.Tensor,
    cells: np.ndarray,
    epochs: int,
    seed: int,
) -> None:
    """The plain loop both modules share: same order and random stream for a given seed."""
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, eps=0.01, weight_decay=1e-6)
    order_rng = np.random.default_rng(seed)
    torch.manual_seed(seed + 1000)
    module.train()
    for epoch in range(epochs):
        order = torch.as_tensor(order_rng.permutation(cells))
        for start in range(0, len(order), 128):
            rows = order[start : start + 128]
            tensors = {
                "X": counts[rows],
                "batch": batches[rows],
                "labels": torch.zeros(len(rows), 1, dtype=torch.long),
            }
            optimizer.zero_grad()
            _, _, losses = module(tensors, loss_kwargs={"kl_weight": min(1.0, epoch / 400)})
            losses.loss.backward()
            optimizer.step()
    module.eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--max-epochs", type=int, default=100)
    args = parser.parse_args()
    import scvi

    import cellvi

    torch.set_num_threads(1)
    adata = anndata.read_h5ad(args.data_dir / "kang_ifnb_2k.h5ad")
    condition = adata.obs["condition"].astype(str).to_numpy()
    counts = torch.as_tensor(adata.X.toarray(), dtype=torch.float32)
    batches = torch.as_tensor((condition == "stim").astype(np.int64))[:, None]
    print(
        "| seed | scvi-tools VAE mixing | cellvi VAE mixing | difference |\n"
        "| --- | --- | --- | --- |"
    )
    for seed in args.seeds:
        train_cells = split(adata.n_obs, seed)[0]
        torch.manual_seed(seed)
        reference = scvi.module.VAE(n_input=adata.n_vars, n_batch=2)
        candidate = cellvi.module.VAE(n_input=adata.n_vars, n_batch=2)
        transplant(reference, candidate, n_latent=10)
        mixing = []
        for module in (reference, candidate):
            train(module, counts, batches, train_cells, args.max_epochs, seed)
            with torch.no_grad():
                latent = module.inference(x=counts, batch_index=batches)["qz"].loc.numpy()
            mixing.append(batch_mixing_entropy(latent, condition))
        print(
            f"| {seed} | {mixing[0]:.4f} | {mixing[1]:.4f} | {mixing[1] - mixing[0]:+.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
