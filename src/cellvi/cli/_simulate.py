"""``cellvi simulate``: write cellvi's simulated counts to an .h5ad file (example data)."""

from __future__ import annotations

from pathlib import Path

import click

from cellvi.cli._errors import reported
from cellvi.cli._io import check_new_files, check_suffix, write_h5ad
from cellvi.cli._options import output_options


@click.command("simulate", short_help="Write simulated example counts to an .h5ad file.")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--n-cells", type=click.IntRange(min=2), default=2_000, show_default=True)
@click.option("--n-genes", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--n-batches", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--n-cell-types", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@output_options
@reported
def simulate(
    out: Path,
    n_cells: int,
    n_genes: int,
    n_batches: int,
    n_cell_types: int,
    seed: int,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Write simulated counts (cellvi.data.simulate) to OUT, an .h5ad file.

    Negative binomial counts of cell types seen in several batches, with obs['batch'] and
    obs['cell_type']: data to try the other subcommands on.

    \b
    Example:
      cellvi simulate example.h5ad --n-cells 2000 --n-batches 2
    """
    from cellvi.data import simulate as simulate_counts

    check_suffix(out, (".h5ad",), option="OUT")
    check_new_files([out], overwrite)
    adata = simulate_counts(
        n_cells=n_cells, n_genes=n_genes, n_batches=n_batches, n_cell_types=n_cell_types, seed=seed
    )
    write_h5ad(adata, out)
    click.echo(
        f"Wrote {out}: {adata.n_obs} cells x {adata.n_vars} genes, obs['batch'] "
        f"({n_batches} batches) and obs['cell_type'] ({n_cell_types} types)."
    )
