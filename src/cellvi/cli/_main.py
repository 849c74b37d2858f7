"""The ``cellvi`` command group."""

from __future__ import annotations

import click

from cellvi._version import __version__
from cellvi.cli._de import de
from cellvi.cli._fit import fit
from cellvi.cli._info import info
from cellvi.cli._latent import latent
from cellvi.cli._normalize import normalize
from cellvi.cli._simulate import simulate

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", "-V", prog_name="cellvi")
def cli() -> None:
    """cellvi: scVI-family models of single-cell counts, from the command line.

    Train a model on an .h5ad file (fit), then read the saved model on the same or new data:
    the latent representation (latent), normalized expression (normalize), differential
    expression (de); describe a saved model (info). Every subcommand has --help.

    Exit status: 0 success, 2 bad usage (an unknown option, a missing argument), 1 failure,
    with the reason on one line of stderr.

    \b
    Example:
      cellvi simulate example.h5ad
      cellvi fit example.h5ad --batch-key batch --labels-key cell_type --out example_scvi
      cellvi de example_scvi example_scvi/adata.h5ad --groupby cell_type --out de.csv
    """


for command in (fit, latent, normalize, de, info, simulate):
    cli.add_command(command)


def main() -> None:
    """Run the command line (the ``cellvi`` console script)."""
    cli(prog_name="cellvi")
