"""A saved model bound to the data of a query: loaded as is, or mapped onto (scArches)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from anndata import AnnData

from cellvi.cli._errors import Failure, reason
from cellvi.cli._io import model_paths, saved_model_class
from cellvi.cli._options import parse_device
from cellvi.model.base import ModelFileError


def query_options(function: Any) -> Any:
    """``--prefix``, ``--query-epochs`` and ``--batch-size``: how a saved model reads data."""
    function = click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=None,
        help="Minibatch size of the query (default cellvi.settings.batch_size, 128).",
    )(function)
    function = click.option(
        "--query-epochs",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Map DATA onto the model first (reference mapping, scArches): pad missing "
        "genes, learn weights for batches the model never saw, for this many epochs. 0: "
        "read DATA with the model as it is (same genes, known categories).",
    )(function)
    return click.option(
        "--prefix", default=None, help="File-name prefix the model was saved with."
    )(function)


def model_for(
    model_dir: Path,
    adata: AnnData,
    prefix: str | None,
    query_epochs: int,
    accelerator: str,
    device: str,
    quiet: bool,
) -> tuple[Any, AnnData]:
    """The saved model, bound to ``adata`` (mapped onto it first with ``query_epochs``).

    Returns the model and the AnnData it reads (the query, padded to the model's genes when
    mapped).
    """
    paths = model_paths(model_dir, prefix)
    cls = saved_model_class(paths)
    index = parse_device(device)
    if query_epochs == 0:
        try:
            model = cls.load(
                paths.directory, adata=adata, accelerator=accelerator, device=index, prefix=prefix
            )
        except ModelFileError:
            raise
        except (ValueError, KeyError) as error:
            raise Failure(
                f"{reason(error)} To map new data onto the model (new batches, missing genes), "
                "pass --query-epochs N."
            ) from error
        return model, adata
    if prefix:
        raise Failure("--query-epochs reads the model saved without a prefix; drop --prefix.")
    cls.prepare_query_anndata(adata, paths.directory)
    model = cls.load_query_data(adata, paths.directory, accelerator=accelerator, device=index)
    model.train(
        max_epochs=query_epochs,
        accelerator=accelerator,
        devices=1 if index == "auto" else [index],
        plan_kwargs={"weight_decay": 0.0},
        enable_progress_bar=not quiet,
    )
    return model, adata
