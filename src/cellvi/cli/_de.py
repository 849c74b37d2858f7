"""``cellvi de``: differential expression between groups of DATA's cells."""

from __future__ import annotations

import click

from cellvi.cli._errors import Failure
from cellvi.cli._io import TABLE_SUFFIXES, write_table
from cellvi.cli._query_command import Query, query_command


@query_command(
    "de",
    short_help="Differential expression between groups of cells.",
    out_help="Table to write: .csv, .tsv or .parquet (one row per gene and comparison).",
)
@click.option("--groupby", help="obs column of the groups to compare.")
@click.option(
    "--group1",
    multiple=True,
    help="Group(s) of --groupby to test, each against --group2 (default: every group).",
)
@click.option("--group2", help="Reference group (default: all other cells).")
@click.option(
    "--idx1",
    help="Instead of groups: the first population, as a query on obs (\"cell_type == 'B'\").",
)
@click.option("--idx2", help="The second population, as a query on obs (default: the rest).")
@click.option(
    "--mode",
    type=click.Choice(["change", "vanilla"]),
    default="change",
    show_default=True,
    help="change: posterior of the log fold change (Boyeau 2019); vanilla: Bayes factors.",
)
@click.option(
    "--delta",
    type=click.FloatRange(min=0, min_open=True),
    default=0.25,
    show_default=True,
    help="Smallest log2 fold change that counts (change mode).",
)
@click.option(
    "--fdr-target",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.05,
    show_default=True,
    help="Target false discovery rate (change mode).",
)
@click.option(
    "--batch-correction",
    is_flag=True,
    help="Compare expression decoded in the same batches.",
)
def de(
    query: Query,
    groupby: str | None,
    group1: tuple[str, ...],
    group2: str | None,
    idx1: str | None,
    idx2: str | None,
    mode: str,
    delta: float,
    fdr_target: float,
    batch_correction: bool,
) -> None:
    """Differential expression between groups of DATA's cells, under the model in MODEL_DIR.

    Give --groupby (each group against the rest, or --group1 against --group2), or two
    populations as queries on obs (--idx1, --idx2). The table has scvi-tools' columns
    (proba_de, lfc_mean, bayes_factor, ...). A progress bar follows long queries.

    \b
    Example:
      cellvi de pbmc_scvi pbmc.h5ad --groupby cell_type --out de.csv
    """
    if groupby is None and idx1 is None:
        raise Failure("Say which cells to compare: --groupby COLUMN, or --idx1 QUERY.")
    if groupby is not None and idx1 is not None:
        raise Failure("Give --groupby or --idx1, not both.")
    if idx1 is None and (group1 or group2) and groupby is None:
        raise Failure("--group1 and --group2 are groups of --groupby; give --groupby.")
    model, adata = query.model_and_data(TABLE_SUFFIXES)
    table = model.differential_expression(
        adata,
        groupby=groupby,
        group1=list(group1) or None,
        group2=group2,
        idx1=idx1,
        idx2=idx2,
        mode=mode,
        delta=delta,
        fdr_target=fdr_target,
        batch_correction=batch_correction,
        batch_size=query.batch_size,
        silent=query.quiet,
    )
    write_table(table, query.out, index_label="gene")
    comparisons = table["comparison"].nunique() if "comparison" in table else 1
    click.echo(f"Wrote {query.out} ({len(table)} rows: {comparisons} comparison(s)).")
