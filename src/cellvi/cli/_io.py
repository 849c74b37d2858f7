"""Reading the command line's inputs and writing its outputs."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anndata
import pandas as pd
from anndata import AnnData

from cellvi.cli._errors import Failure, one_line, reason
from cellvi.model import SCANVI, SCVI, CondSCVI
from cellvi.model.base._files import ModelPaths, read_description
from cellvi.model.base._persistence import _dates_as_strings

#: The models the command line trains and reads, by their ``--model`` names.
MODELS = {"scvi": SCVI, "scanvi": SCANVI, "condscvi": CondSCVI}
_BY_CLASS_NAME = {cls.__name__: cls for cls in MODELS.values()}
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")


def read_data(path: Path) -> AnnData:
    """The AnnData of an ``.h5ad`` file, or a :class:`Failure` saying why it cannot be read."""
    if not path.exists():
        raise Failure(f"{path}: no such file.")
    if path.is_dir():
        raise Failure(f"{path} is a directory; give an .h5ad file.")
    try:
        return anndata.read_h5ad(path)
    except Exception as error:
        raise Failure(
            f"{path} cannot be read as an .h5ad file ({one_line(reason(error))})."
        ) from error


def model_paths(directory: Path, prefix: str | None) -> ModelPaths:
    """The files of the model saved in ``directory``, or in its ``model/`` folder.

    ``cellvi fit --out DIR`` saves the model in ``DIR/model``; either folder may be given.
    """
    paths = ModelPaths(directory, prefix or "")
    nested = ModelPaths(directory / "model", prefix or "")
    if not paths.description.is_file() and nested.description.is_file():
        return nested
    return paths


def saved_model_class(paths: ModelPaths) -> type:
    """The model class of a saved model, read from its description (no weights loaded).

    A directory that holds no cellvi model gets the Python API's own message
    (``ModelFileError``).
    """
    if not paths.description.is_file():
        if (paths.directory / f"{paths.prefix}model.pt").is_file():
            raise Failure(
                f"{paths.directory} holds a model saved by scvi-tools (model.pt); the command "
                "line reads cellvi models. Load it once in Python (cellvi.model.SCVI.load) and "
                "save it with cellvi."
            )
        raise Failure(
            f"No saved model at {paths.directory} (missing {paths.description.name}); check "
            "the path and the prefix."
        )
    description = read_description(paths)
    name = description["model_class"]
    if name not in _BY_CLASS_NAME:
        raise Failure(
            f"{paths.directory} holds a {name} model; the command line handles "
            f"{', '.join(_BY_CLASS_NAME)}."
        )
    return _BY_CLASS_NAME[name]


def check_new_files(paths: list[Path], overwrite: bool) -> None:
    """Refuse to replace files that exist, unless ``--overwrite``."""
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        named = ", ".join(existing[:3]) + (
            f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        )
        raise Failure(
            f"{named} already exist{'s' if len(existing) == 1 else ''}; pass --overwrite to "
            "replace, or write elsewhere."
        )


def check_suffix(path: Path, allowed: tuple[str, ...], option: str = "--out") -> str:
    """The suffix of an output file, refused when the command cannot write it."""
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise Failure(
            f"{option} {path}: cannot write a {suffix or 'suffix-less'} file; use "
            f"{', '.join(allowed)}."
        )
    return suffix


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` when the block succeeds.

    A failed or interrupted write never leaves a half-written output behind, and never
    damages a file it would replace (an input file may be the output).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def write_h5ad(adata: AnnData, path: Path) -> None:
    """Write ``adata`` (date columns as strings, as ``model.save`` does)."""
    with replaced_atomically(path) as temporary, _dates_as_strings(adata):
        adata.write_h5ad(temporary)


def write_table(table: pd.DataFrame, path: Path, index_label: str) -> None:
    """Write a table as CSV, TSV or parquet, as ``path``'s suffix says."""
    suffix = path.suffix.lower()
    with replaced_atomically(path) as temporary:
        if suffix == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError as error:
                raise Failure(
                    f"Writing {path} needs pyarrow: pip install 'cellvi[parquet]' (or write a "
                    ".csv)."
                ) from error
            frame = table.copy()
            frame.index.name = index_label
            frame.columns = [str(column) for column in frame.columns]
            frame.to_parquet(temporary)
        else:
            table.to_csv(temporary, sep="\t" if suffix == ".tsv" else ",", index_label=index_label)


def model_summary(model: Any) -> str:
    """A one-line name of a model (class and size)."""
    stats = model.summary_stats
    return (
        f"{type(model).__name__} ({stats.get('n_vars', '?')} genes, "
        f"{stats.get('n_batch', '?')} batches, {stats.get('n_labels', '?')} labels)"
    )
