"""The main cellvi job on a built-in dataset: train SCVI on simulated counts, save the latent,
write a training report (curves and the latent space, in one HTML page)."""

from __future__ import annotations

import time
from pathlib import Path

import cellvi
from cellvi.cli import write_training_report

OUTPUT = Path(__file__).resolve().parent.parent / "demo_output"


def main() -> None:
    """Simulate counts with batch effects, train SCVI, report held-out fit and timing."""
    cellvi.settings.seed = 0
    adata = cellvi.data.simulate(n_cells=4_000, n_genes=1_000, n_batches=3, n_cell_types=6, seed=0)
    print(f"Simulated {adata.n_obs} cells x {adata.n_vars} genes, 3 batches, 6 cell types.")

    cellvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    model = cellvi.model.SCVI(adata, n_latent=10)
    print(model)
    n_epochs = 30
    start = time.perf_counter()
    model.train(
        max_epochs=n_epochs,
        train_size=0.8,
        validation_size=0.1,
        accelerator="cpu",
        check_val_every_n_epoch=1,
        enable_progress_bar=False,
    )
    seconds = time.perf_counter() - start
    n_train = len(model.train_indices)
    print(
        f"Trained {n_epochs} epochs on {n_train} cells in {seconds:.1f} s "
        f"({n_epochs * n_train / seconds:,.0f} cells/s on the CPU)."
    )

    test = model.test_indices
    print(f"Held-out ELBO per cell ({len(test)} test cells): {model.get_elbo(indices=test):.2f}")
    print(
        "Held-out marginal log-likelihood per cell (100 importance samples): "
        f"{model.get_marginal_ll(indices=test, n_mc_samples=100):.2f}"
    )

    adata.obsm["X_scVI"] = model.get_latent_representation()
    OUTPUT.mkdir(exist_ok=True)
    adata_path = OUTPUT / "simulated_scvi.h5ad"
    adata.write_h5ad(adata_path)
    model.save(OUTPUT / "scvi_model", overwrite=True)
    report = write_training_report(
        model,
        adata,
        OUTPUT,
        latent=adata.obsm["X_scVI"],
        seconds=seconds,
        color=["batch", "cell_type"],
    )
    print(
        f"Wrote {adata_path} (latent in obsm['X_scVI']), the model to {OUTPUT / 'scvi_model'} "
        f"and the training report {report} (pictures also in history.png, embedding.png)."
    )


if __name__ == "__main__":
    main()
