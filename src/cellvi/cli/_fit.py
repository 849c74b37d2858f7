"""``cellvi fit``: train a model on an .h5ad file; save it, the data with its latent, a report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from cellvi._settings import settings
from cellvi.cli._errors import Failure, reported
from cellvi.cli._io import MODELS, check_new_files, read_data, write_h5ad, write_table
from cellvi.cli._options import (
    device_options,
    output_options,
    parse_devices,
    split_keys,
)
from cellvi.cli._report import REPORT_FILES, write_training_report
from cellvi.plotting import history_table
from cellvi.plotting._embedding import UMAP_HINT, umap_available

#: What ``fit`` writes in ``--out``.
MODEL_DIR, ADATA_FILE, HISTORY_FILE = "model", "adata.h5ad", "history.csv"
# Options of the model's constructor that a model may not take.
_NOT_FOR_CONDSCVI = ("gene_likelihood", "dispersion")


@click.command("fit", short_help="Train a model; save it, the data with its latent, a report.")
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "-o",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Folder to write: {MODEL_DIR}/ (the saved model), {ADATA_FILE} (DATA with the "
    f"latent representation), {HISTORY_FILE} and the training report.",
)
@click.option(
    "--model",
    "model_name",
    type=click.Choice(list(MODELS), case_sensitive=False),
    default="scvi",
    show_default=True,
    help="scvi; scanvi (cell labels, some unlabeled: --labels-key, --unlabeled-category); "
    "condscvi (conditioned on the cell type, --labels-key).",
)
@click.option("--layer", default=None, help="Layer of raw counts (default: X).")
@click.option("--batch-key", default=None, help="obs column of the batch.")
@click.option("--labels-key", default=None, help="obs column of the cell labels.")
@click.option(
    "--unlabeled-category",
    default="Unknown",
    show_default=True,
    help="scanvi: the label of cells without one.",
)
@click.option("--size-factor-key", default=None, help="obs column of size factors.")
@click.option(
    "--categorical-covariate-keys",
    multiple=True,
    help="obs columns of categorical covariates (repeat, or separate with commas).",
)
@click.option(
    "--continuous-covariate-keys",
    multiple=True,
    help="obs columns of continuous covariates (repeat, or separate with commas).",
)
@click.option("--n-latent", type=click.IntRange(min=1), help="Latent dimensions.")
@click.option("--n-hidden", type=click.IntRange(min=1), help="Units per hidden layer.")
@click.option("--n-layers", type=click.IntRange(min=1), help="Hidden layers.")
@click.option("--dropout-rate", type=click.FloatRange(0, 1, max_open=True), help="Dropout.")
@click.option(
    "--gene-likelihood",
    type=click.Choice(["zinb", "nb", "poisson"]),
    help="Count likelihood (scvi, scanvi; default zinb).",
)
@click.option(
    "--dispersion",
    type=click.Choice(["gene", "gene-batch", "gene-label", "gene-cell"]),
    help="Dispersion parameter (scvi, scanvi; default gene).",
)
@click.option(
    "--max-epochs",
    type=click.IntRange(min=1),
    help="Epochs (default: the model's, from the number of cells).",
)
@click.option("--batch-size", type=click.IntRange(min=2), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate.")
@click.option(
    "--train-size",
    type=click.FloatRange(0, 1, min_open=True),
    help="Fraction of cells to train on (default 0.9).",
)
@click.option(
    "--validation-size",
    type=click.FloatRange(0, 1),
    help="Fraction of cells to validate on (default: the rest).",
)
@click.option(
    "--check-val-every-n-epoch",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Validate every this many epochs (the report's validation curve); 0: never.",
)
@click.option(
    "--early-stopping/--no-early-stopping",
    default=False,
    show_default=True,
    help="Stop when the validation ELBO stops improving.",
)
@device_options
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--latent-key",
    default="X_scVI",
    show_default=True,
    help="obsm key of the latent representation in the written AnnData.",
)
@click.option(
    "--embedding",
    type=click.Choice(["auto", "umap", "pca"]),
    default="auto",
    show_default=True,
    help="2-D embedding of the report: UMAP when umap-learn or scanpy is installed, else PCA.",
)
@click.option("--no-report", is_flag=True, help="Skip the training report.")
@click.option("--overwrite", is_flag=True, help="Replace what an earlier fit wrote in --out.")
@output_options
@reported
def fit(data: Path, out: Path, model_name: str, **options: Any) -> None:
    """Train a model on DATA (an .h5ad file of raw counts) and write the results to --out.

    Writes OUT/model/ (load it with cellvi.model.SCVI.load, or give it to the other
    subcommands), OUT/adata.h5ad (DATA with obsm['X_scVI']; for scanvi also the predicted
    labels in obs['C_scANVI']), OUT/history.csv (the metrics per epoch) and a training report
    (OUT/report.html with the training curves and the latent space, and the same pictures as
    PNG files).

    \b
    Example:
      cellvi fit pbmc.h5ad --batch-key batch --labels-key cell_type --out pbmc_scvi
    """
    quiet = options.pop("quiet")
    model_name = model_name.lower()
    cls = MODELS[model_name]
    outputs = [out / MODEL_DIR, out / ADATA_FILE, out / HISTORY_FILE]
    if not options["no_report"]:
        outputs += [out / name for name in REPORT_FILES]
    check_new_files(outputs, options["overwrite"])
    if options["embedding"] == "umap" and not options["no_report"] and not umap_available():
        raise Failure(f"--embedding umap needs umap-learn or scanpy: {UMAP_HINT}.")
    devices = parse_devices(options["devices"])
    model_kwargs = _model_kwargs(model_name, options)
    settings.seed = options["seed"]

    adata = read_data(data)
    cls.setup_anndata(adata, **_setup_kwargs(model_name, options))
    model = cls(adata, **model_kwargs)
    start = time.perf_counter()
    model.train(**_train_kwargs(options, devices, quiet))
    seconds = time.perf_counter() - start

    latent = model.get_latent_representation()
    adata.obsm[options["latent_key"]] = latent
    if model_name == "scanvi":
        adata.obs["C_scANVI"] = model.predict()
    model.save(out / MODEL_DIR, overwrite=options["overwrite"])
    write_h5ad(adata, out / ADATA_FILE)
    write_table(history_table(model.history), out / HISTORY_FILE, index_label="epoch")
    written = [f"{out / MODEL_DIR}/", str(out / ADATA_FILE), str(out / HISTORY_FILE)]
    if not options["no_report"]:
        report = write_training_report(
            model, adata, out, latent=latent, embedding=options["embedding"], seconds=seconds
        )
        written.append(str(report))
    n_epochs = model.history["elbo_train"].index.max() + 1 if model.history else 0
    click.echo(
        f"Trained {type(model).__name__} for {n_epochs} epochs on {len(model.train_indices)} "
        f"cells in {seconds:.1f} s."
    )
    click.echo(f"Wrote {', '.join(written)}.")


def _setup_kwargs(model_name: str, options: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "layer": options["layer"],
        "batch_key": options["batch_key"],
        "labels_key": options["labels_key"],
        "size_factor_key": options["size_factor_key"],
    }
    categorical = split_keys(options["categorical_covariate_keys"])
    continuous = split_keys(options["continuous_covariate_keys"])
    if model_name == "condscvi":
        if categorical or continuous:
            raise Failure(
                "condscvi takes no covariates (--categorical-covariate-keys, "
                "--continuous-covariate-keys); use --model scvi or scanvi."
            )
        return kwargs
    kwargs["categorical_covariate_keys"] = categorical
    kwargs["continuous_covariate_keys"] = continuous
    if model_name == "scanvi":
        if options["labels_key"] is None:
            raise Failure(
                "scanvi learns cell labels: give --labels-key, the obs column of the labels "
                "(cells labelled --unlabeled-category count as unlabeled)."
            )
        kwargs["unlabeled_category"] = options["unlabeled_category"]
    return kwargs


def _model_kwargs(model_name: str, options: dict[str, Any]) -> dict[str, Any]:
    names = ("n_latent", "n_hidden", "n_layers", "dropout_rate", "gene_likelihood", "dispersion")
    kwargs = {name: options[name] for name in names if options[name] is not None}
    if model_name == "condscvi":
        given = [name for name in _NOT_FOR_CONDSCVI if name in kwargs]
        if given:
            flags = " and ".join(f"--{name.replace('_', '-')}" for name in given)
            raise Failure(f"condscvi has no {flags} option; drop it or use --model scvi.")
    return kwargs


def _train_kwargs(options: dict[str, Any], devices: Any, quiet: bool) -> dict[str, Any]:
    every = options["check_val_every_n_epoch"]
    kwargs: dict[str, Any] = {
        "max_epochs": options["max_epochs"],
        "accelerator": options["accelerator"],
        "devices": devices,
        "batch_size": options["batch_size"],
        "train_size": options["train_size"],
        "validation_size": options["validation_size"],
        "enable_progress_bar": not quiet,
    }
    if every:
        kwargs["check_val_every_n_epoch"] = every
    if options["early_stopping"]:
        kwargs["early_stopping"] = True
    if options["lr"] is not None:
        kwargs["plan_kwargs"] = {"lr": options["lr"]}
    return kwargs
