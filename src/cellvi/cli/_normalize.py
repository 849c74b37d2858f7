"""``cellvi normalize``: normalized expression of DATA's cells, as a layer."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from cellvi.cli._errors import Failure, reported
from cellvi.cli._io import check_new_files, check_suffix, read_data, write_h5ad
from cellvi.cli._loading import model_for, query_options
from cellvi.cli._options import (
    output_options,
    query_device_options,
    split_keys,
)


@click.command("normalize", short_help="Normalized expression of DATA, as a layer.")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The .h5ad file to write: DATA with the normalized expression in layers[--layer].",
)
@click.option(
    "--layer",
    "layer_name",
    default="scvi_normalized",
    show_default=True,
    help="Name of the layer to write.",
)
@click.option(
    "--library-size",
    default="10000",
    show_default=True,
    help="Scale each cell's expression to sum to this ('latent': the model's library size).",
)
@click.option(
    "--n-samples",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Posterior samples averaged per cell.",
)
@click.option(
    "--transform-batch",
    multiple=True,
    help="Decode every cell in this batch (repeat for several: their mean); default each "
    "cell's own.",
)
@query_options
@query_device_options
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@output_options
@reported
def normalize(
    model_dir: Path,
    data: Path,
    out: Path,
    layer_name: str,
    library_size: str,
    n_samples: int,
    transform_batch: tuple[str, ...],
    prefix: str | None,
    query_epochs: int,
    batch_size: int | None,
    accelerator: str,
    device: str,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Normalized expression of DATA's cells under the model in MODEL_DIR, as a layer.

    The expression each cell would have without technical noise, its counts scaled to
    --library-size (cells x genes, float32: the layer is as large as a dense matrix of DATA).
    A progress bar follows long queries.

    \b
    Example:
      cellvi normalize pbmc_scvi pbmc.h5ad --out pbmc_normalized.h5ad
    """
    check_suffix(out, (".h5ad",))
    check_new_files([out], overwrite)
    scale = _library_size(library_size)
    adata = read_data(data)
    model, adata = model_for(model_dir, adata, prefix, query_epochs, accelerator, device, quiet)
    batches = split_keys(transform_batch)
    values = model.get_normalized_expression(
        adata,
        library_size=scale,
        n_samples=n_samples,
        transform_batch=batches if batches is None or len(batches) > 1 else batches[0],
        batch_size=batch_size,
        return_mean=True,
        return_numpy=True,
        silent=quiet,
    )
    adata.layers[layer_name] = np.asarray(values, dtype=np.float32)
    write_h5ad(adata, out)
    click.echo(f"Wrote {out} (normalized expression in layers[{layer_name!r}]).")


def _library_size(value: str) -> float | str:
    if value == "latent":
        return value
    try:
        scale = float(value)
    except ValueError:
        scale = 0.0
    if not scale > 0:
        raise Failure(f"--library-size must be a positive number or 'latent', got {value!r}.")
    return scale
