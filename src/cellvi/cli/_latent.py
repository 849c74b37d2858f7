"""``cellvi latent``: the latent representation of DATA's cells under a saved model."""

from __future__ import annotations

import click
import pandas as pd

from cellvi.cli._io import TABLE_SUFFIXES, write_h5ad, write_table
from cellvi.cli._query_command import Query, query_command


@query_command(
    "latent",
    short_help="The latent representation of DATA under a saved model.",
    out_help="File to write: .h5ad (DATA with the latent in obsm[--key]), or a table of cells by "
    "latent dimensions (.csv, .tsv, .parquet).",
)
@click.option("--key", default="X_scVI", show_default=True, help="obsm key of the latent.")
@click.option(
    "--sample",
    is_flag=True,
    help="One draw of the posterior instead of its mean.",
)
def latent(
    query: Query,
    key: str,
    sample: bool,
) -> None:
    """The latent representation of DATA's cells under the model saved in MODEL_DIR.

    MODEL_DIR is a saved model (or the --out folder of `cellvi fit`). DATA needs the model's
    genes and categories, unless --query-epochs maps it onto the model first.

    \b
    Example:
      cellvi latent pbmc_scvi new_cells.h5ad --out new_cells_latent.h5ad
    """
    model, adata = query.model_and_data((".h5ad", *TABLE_SUFFIXES))
    values = model.get_latent_representation(
        adata, give_mean=not sample, batch_size=query.batch_size
    )
    out = query.out
    if out.suffix.lower() == ".h5ad":
        adata.obsm[key] = values
        write_h5ad(adata, out)
        click.echo(f"Wrote {out} (latent in obsm[{key!r}], {values.shape[1]} dimensions).")
        return
    columns = [f"latent_{i}" for i in range(values.shape[1])]
    write_table(pd.DataFrame(values, index=adata.obs_names, columns=columns), out, "cell")
    click.echo(f"Wrote {out} ({values.shape[0]} cells x {values.shape[1]} latent dimensions).")
