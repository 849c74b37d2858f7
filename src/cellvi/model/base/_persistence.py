"""``save`` and ``load`` of model classes, in the code-free format of ``_files``."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import torch
from anndata import AnnData

from cellvi._version import __version__
from cellvi.dataloaders._device import resolve_device
from cellvi.model.base._files import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ModelFileError,
    ModelPaths,
    SavedModel,
    read_model_files,
    write_model_files,
)
from cellvi.model.base._init_params import init_arguments
from cellvi.model.base._json_values import from_json_values, to_json_values
from cellvi.model.base._scvi_tools_files import has_scvi_tools_model, read_scvi_tools_model
from cellvi.train import TrainingState, is_global_zero

logger = logging.getLogger("cellvi")
Model = TypeVar("Model", bound="PersistenceMixin")


class PersistenceMixin:
    """Save a model to a directory and load it back, without pickles."""

    def save(
        self,
        dir_path: str | Path,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        **anndata_write_kwargs: Any,
    ) -> None:
        """Save the model (weights, setup, training state) to ``dir_path``.

        Parameters
        ----------
        dir_path
            Directory to write (created if needed).
        prefix
            Prefix of the file names, to keep several models in one directory.
        overwrite
            Replace a model saved there before; otherwise an existing model is an error.
        save_anndata
            Also write the training AnnData (``adata.h5ad``), so ``load`` needs no data.
        **anndata_write_kwargs
            Passed to ``AnnData.write_h5ad``.

        In a distributed fit every process runs the script and holds the same model; only
        rank 0 writes it, the others return without writing.
        """
        if not is_global_zero():
            logger.debug("Not rank 0 of a distributed run: rank 0 saves the model.")
            return
        description = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "cellvi_version": __version__,
            "model_class": type(self).__name__,
            "init_params": _json_checked(to_json_values(self.init_params_), "init parameter"),
            "registry": _json_checked(self.adata_manager.registry, "registry entry"),
            "attributes": self.training_state.to_json(),
        }
        write_adata = None
        if save_anndata:
            adata = self.adata

            def write_adata(path: Path) -> None:
                with _dates_as_strings(adata):
                    adata.write_h5ad(path, **anndata_write_kwargs)

        write_model_files(
            ModelPaths(Path(dir_path), prefix or ""),
            self.module.state_dict(),
            description,
            overwrite=overwrite,
            write_adata=write_adata,
        )

    @classmethod
    def load(
        cls: type[Model],
        dir_path: str | Path,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
    ) -> Model:
        """Load a model saved with ``save``; no code from the files is executed.

        Parameters
        ----------
        dir_path
            Directory written by ``save``, or by scvi-tools' ``save`` (a ``model.pt``: read
            as data only, see :mod:`cellvi.model.base._scvi_tools_files`).
        adata
            AnnData to bind the model to; it must hold the training genes (same order) and only
            training categories. None uses the AnnData saved with the model.
        accelerator
            "auto" (GPU if available), "cpu", "gpu" or "cuda".
        device
            Device index or "auto".
        prefix
            File-name prefix used at save time.
        """
        paths = ModelPaths(Path(dir_path), prefix or "")
        read = (
            read_scvi_tools_model
            if not paths.description.is_file()
            and has_scvi_tools_model(paths.directory, paths.prefix)
            else read_model_files
        )
        saved = read(paths, cls.__name__, read_adata=adata is None)
        registry = saved.description["registry"]
        if adata is None:
            adata = saved.adata
        else:
            cls._check_data_for_load(adata, registry)
        cls.setup_anndata(adata, source_registry=registry, **registry["setup_args"])
        model, weights = _build_checked(cls, adata, saved, paths)
        # A module may need to create lazily built parameters before the saved ones fit.
        model.module.on_load(weights, registry, model._example_batch())
        try:
            model.module.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            raise ModelFileError(
                f"The weights in {paths.directory} do not fit a {cls.__name__} built with the "
                f"saved parameters: {error}"
            ) from error
        model.training_state = TrainingState.from_json(saved.description["attributes"])
        model.to_device(resolve_device(accelerator, device))
        model.module.eval()
        return model

    @classmethod
    def _check_data_for_load(cls, adata: AnnData, registry: dict[str, Any]) -> None:
        """Refuse an AnnData given to :meth:`load` that the saved model cannot use.

        A hook for model classes with rules of their own (minified data); the base class
        leaves the check to ``setup_anndata`` against the saved registry.
        """


def _build_checked(
    cls: type[Model], adata: AnnData, saved: SavedModel, paths: ModelPaths
) -> tuple[Model, dict[str, torch.Tensor]]:
    """Build the model from its saved init parameters, checked against the saved weights first.

    A sketch of the model is built on PyTorch's ``meta`` device, which allocates nothing, and
    the shapes it implies are compared with those of the saved tensors; only a model that
    fits is then built for real. Parameters edited into absurd values therefore fail here,
    before they can allocate memory, and every refusal is a :class:`ModelFileError`.
    Returns the model and the saved weights under its module's names.
    """
    try:
        init_params = init_arguments(from_json_values(saved.description["init_params"]))
    except ValueError as error:
        raise ModelFileError(f"The init parameters in {paths.description}: {error}") from error
    try:
        with torch.device("meta"):
            sketch = cls(adata, **init_params)
    except Exception:
        # A module that reads tensor values while it builds cannot be sketched; it is then
        # built for real, and checked just the same.
        sketch = None
    if sketch is not None:
        _check_shapes(sketch.module, saved.weights_for(sketch.module), paths)
    try:
        model = cls(adata, **init_params)
    except Exception as error:
        raise ModelFileError(
            f"The init parameters in {paths.description} cannot build a {cls.__name__} "
            f"({type(error).__name__}: {error}); the file was edited or is corrupt."
        ) from error
    weights = saved.weights_for(model.module)
    if sketch is None:
        _check_shapes(model.module, weights, paths)
    return model, weights


def _check_shapes(
    module: torch.nn.Module, weights: dict[str, torch.Tensor], paths: ModelPaths
) -> None:
    mismatched = [
        f"{name}: {tuple(tensor.shape)} implied, {tuple(weights[name].shape)} saved"
        for name, tensor in module.state_dict().items()
        if name in weights and not _shapes_fit(tensor.shape, weights[name].shape)
    ]
    if mismatched:
        raise ModelFileError(
            f"The init parameters in {paths.description} do not fit the saved weights "
            f"({'; '.join(mismatched[:5])}); one of the two files was edited or swapped."
        )


def _shapes_fit(implied: torch.Size, saved: torch.Size) -> bool:
    """Whether a saved tensor fits: the same shape, or the same vector in another layout.

    Modules read vectors saved in an older layout (cellvi 0.1's library priors were columns,
    ``(n_batch, 1)``, now rows) with their load hooks, so only the vector itself must match.
    """
    if tuple(implied) == tuple(saved):
        return True
    return _is_vector(implied) and _is_vector(saved) and implied.numel() == saved.numel()


def _is_vector(shape: torch.Size) -> bool:
    return sum(size > 1 for size in shape) <= 1


def _json_checked(value: dict[str, Any], what: str) -> dict[str, Any]:
    """Fail clearly when something cannot be stored as JSON (cellvi files never hold code)."""
    for key, item in value.items():
        try:
            json.dumps(item)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"The {what} {key!r}={item!r} cannot be saved: model files hold JSON data only, "
                "never code or pickled objects. Pass plain values (numbers, strings, lists, "
                "numpy arrays, pandas tables)."
            ) from error
    return value


@contextlib.contextmanager
def _dates_as_strings(adata: AnnData) -> Iterator[None]:
    """Hold the date columns of ``obs`` and ``var`` as strings while the AnnData is written.

    h5ad cannot store datetime columns. Categories are registered by their string form, so
    the saved strings encode to the same codes when the model is loaded; the AnnData in
    memory gets its columns back afterwards.
    """
    replaced = []
    for frame in (adata.obs, adata.var):
        for column in frame.columns:
            values = frame[column]
            dtype = values.dtype
            if isinstance(dtype, pd.CategoricalDtype):
                dtype = dtype.categories.dtype
            if pd.api.types.is_datetime64_any_dtype(dtype):
                replaced.append((frame, column, values))
                frame[column] = values.astype(str)
    try:
        yield
    finally:
        for frame, column, values in replaced:
            frame[column] = values
