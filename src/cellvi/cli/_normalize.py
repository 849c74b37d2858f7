"""``cellvi normalize``: normalized expression of DATA's cells, as a layer."""

from __future__ import annotations

import click
import numpy as np

from cellvi.cli._errors import Failure
from cellvi.cli._io import write_h5ad
from cellvi.cli._options import split_keys
from cellvi.cli._query_command import Query, query_command


@query_command(
    "normalize",
    short_help="Normalized expression of DATA, as a layer.",
    out_help="The .h5ad file to write: DATA with the normalized expression in layers[--layer].",
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
def normalize(
    query: Query,
    layer_name: str,
    library_size: str,
    n_samples: int,
    transform_batch: tuple[str, ...],
) -> None:
    """Normalized expression of DATA's cells under the model in MODEL_DIR, as a layer.

    The expression each cell would have without technical noise, its counts scaled to
    --library-size (cells x genes, float32: the layer is as large as a dense matrix of DATA).
    A progress bar follows long queries.

    \b
    Example:
      cellvi normalize pbmc_scvi pbmc.h5ad --out pbmc_normalized.h5ad
    """
    scale = _library_size(library_size)
    model, adata = query.model_and_data((".h5ad",))
    batches = split_keys(transform_batch)
    values = model.get_normalized_expression(
        adata,
        library_size=scale,
        n_samples=n_samples,
        transform_batch=batches if batches is None or len(batches) > 1 else batches[0],
        batch_size=query.batch_size,
        return_mean=True,
        return_numpy=True,
        silent=query.quiet,
    )
    adata.layers[layer_name] = np.asarray(values, dtype=np.float32)
    write_h5ad(adata, query.out)
    click.echo(f"Wrote {query.out} (normalized expression in layers[{layer_name!r}]).")


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
