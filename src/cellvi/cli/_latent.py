"""``cellvi latent``: the latent representation of DATA's cells under a saved model."""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd

from cellvi.cli._errors import reported
from cellvi.cli._io import (
    TABLE_SUFFIXES,
    check_new_files,
    check_suffix,
    read_data,
    write_h5ad,
    write_table,
)
from cellvi.cli._loading import model_for, query_options
from cellvi.cli._options import output_options, query_device_options


@click.command("latent", short_help="The latent representation of DATA under a saved model.")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write: .h5ad (DATA with the latent in obsm[--key]), or a table of cells by "
    "latent dimensions (.csv, .tsv, .parquet).",
)
@click.option("--key", default="X_scVI", show_default=True, help="obsm key of the latent.")
@click.option(
    "--sample",
    is_flag=True,
    help="One draw of the posterior instead of its mean.",
)
@query_options
@query_device_options
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@output_options
@reported
def latent(
    model_dir: Path,
    data: Path,
    out: Path,
    key: str,
    sample: bool,
    prefix: str | None,
    query_epochs: int,
    batch_size: int | None,
    accelerator: str,
    device: str,
    overwrite: bool,
    quiet: bool,
) -> None:
    """The latent representation of DATA's cells under the model saved in MODEL_DIR.

    MODEL_DIR is a saved model (or the --out folder of `cellvi fit`). DATA needs the model's
    genes and categories, unless --query-epochs maps it onto the model first.

    \b
    Example:
      cellvi latent pbmc_scvi new_cells.h5ad --out new_cells_latent.h5ad
    """
    suffix = check_suffix(out, (".h5ad", *TABLE_SUFFIXES))
    check_new_files([out], overwrite)
    adata = read_data(data)
    model, adata = model_for(model_dir, adata, prefix, query_epochs, accelerator, device, quiet)
    values = model.get_latent_representation(adata, give_mean=not sample, batch_size=batch_size)
    if suffix == ".h5ad":
        adata.obsm[key] = values
        write_h5ad(adata, out)
        click.echo(f"Wrote {out} (latent in obsm[{key!r}], {values.shape[1]} dimensions).")
        return
    columns = [f"latent_{i}" for i in range(values.shape[1])]
    write_table(pd.DataFrame(values, index=adata.obs_names, columns=columns), out, "cell")
    click.echo(f"Wrote {out} ({values.shape[0]} cells x {values.shape[1]} latent dimensions).")
