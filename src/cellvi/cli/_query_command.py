"""What every query subcommand (latent, normalize, de) takes: a saved model, DATA, one output."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from anndata import AnnData

from cellvi.cli._errors import reported
from cellvi.cli._io import check_new_files, check_suffix, read_data
from cellvi.cli._loading import model_for, query_options
from cellvi.cli._options import output_options, query_device_options


@dataclasses.dataclass(frozen=True)
class Query:
    """The options a query subcommand shares: which model reads which data, where to write."""

    model_dir: Path
    data: Path
    out: Path
    prefix: str | None
    query_epochs: int
    batch_size: int | None
    accelerator: str
    device: str
    overwrite: bool
    quiet: bool

    def model_and_data(self, suffixes: tuple[str, ...]) -> tuple[Any, AnnData]:
        """Check ``--out`` (one of ``suffixes``, new unless ``--overwrite``), then read DATA
        and bind the model to it (mapped onto it with ``--query-epochs``)."""
        check_suffix(self.out, suffixes)
        check_new_files([self.out], self.overwrite)
        adata = read_data(self.data)
        return model_for(
            self.model_dir,
            adata,
            self.prefix,
            self.query_epochs,
            self.accelerator,
            self.device,
            self.quiet,
        )


_SHARED = tuple(field.name for field in dataclasses.fields(Query))


def query_command(name: str, short_help: str, out_help: str) -> Callable[[Any], click.Command]:
    """A click command of MODEL_DIR and DATA with ``--out`` and the shared query options.

    The decorated function takes the shared options as one :class:`Query` (its first
    argument), and its own options by name.
    """

    def decorate(function: Callable[..., None]) -> click.Command:
        @functools.wraps(function)
        def run(**options: Any) -> None:
            query = Query(**{key: options.pop(key) for key in _SHARED})
            function(query, **options)

        run = output_options(run)
        run = click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")(run)
        run = query_device_options(query_options(run))
        out = click.Path(dir_okay=False, path_type=Path)
        run = click.option("--out", "-o", required=True, type=out, help=out_help)(run)
        run = click.argument("data", type=click.Path(path_type=Path))(run)
        run = click.argument("model_dir", type=click.Path(path_type=Path))(run)
        return click.command(name, short_help=short_help)(reported(run))

    return decorate
