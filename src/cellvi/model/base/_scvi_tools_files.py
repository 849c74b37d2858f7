"""Reading models saved by scvi-tools (``model.pt``) without executing their code.

scvi-tools pickles a dict of the module's tensors, the var names and the model's
attributes. A pickle can name any function to call while it is read; this reader lets it
name only the constructors of tensors, numpy arrays, pandas frames (the training history)
and plain containers, and refuses anything else before it runs. The weights are then
mapped onto cellvi's module by the module itself (``state_dict_from_scvi_tools``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import anndata
import numpy as np
import pandas as pd
import torch

from cellvi.model.base._constants import SAVE_KEYS
from cellvi.model.base._files import ModelFileError, ModelPaths, SavedModel

#: What an scvi-tools model file may construct: data, never behaviour.
_ALLOWED = {
    "builtins": {
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "slice",
        "bytes",
        "bytearray",
        "int",
        "float",
        "complex",
        "str",
        "bool",
    },
    "collections": {"OrderedDict", "defaultdict"},
    "_codecs": {"encode"},  # how protocol-2 pickles store bytes
    "torch._utils": {"_rebuild_tensor_v2", "_rebuild_parameter"},
    "torch": {"Size"},
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.dtypes": {
        "ObjectDType",
        "Float32DType",
        "Float64DType",
        "Int64DType",
        "Int32DType",
        "Int8DType",
        "Int16DType",
        "UInt8DType",
        "BoolDType",
        "StrDType",
        "BytesDType",
    },
    "pandas.core.frame": {"DataFrame"},
    "pandas.core.series": {"Series"},
    "pandas.core.internals.managers": {"BlockManager", "SingleBlockManager"},
    "pandas._libs.internals": {"_unpickle_block"},
    "pandas.core.indexes.base": {"_new_Index", "Index"},
    "pandas.core.indexes.range": {"RangeIndex"},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that constructs only what ``_ALLOWED`` lists."""

    def find_class(self, module: str, name: str) -> Any:
        plain = "builtins" if module == "__builtin__" else module
        if name not in _ALLOWED.get(plain, ()):
            raise pickle.UnpicklingError(
                f"the file asks to run {module}.{name}, which is neither a tensor, an array, "
                "a data frame nor a plain container"
            )
        return super().find_class(plain, name)


class _RestrictedPickle:
    """The ``pickle_module`` ``torch.load`` reads with (it unpickles through ``Unpickler``)."""

    __name__ = "cellvi_restricted_pickle"
    Unpickler = _RestrictedUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


def read_scvi_tools_model(paths: ModelPaths, model_class: str, read_adata: bool) -> SavedModel:
    """Read an scvi-tools ``model.pt`` (and ``adata.h5ad``) as cellvi's :class:`SavedModel`.

    Raises
    ------
    ModelFileError
        When the file asks to construct anything but data, is not an scvi-tools model file,
        holds another model class, or no AnnData is at hand.
    """
    path = paths.directory / f"{paths.prefix}{SAVE_KEYS.MODEL_FNAME}"
    try:
        content = torch.load(
            path, map_location="cpu", pickle_module=_RestrictedPickle, weights_only=False
        )
    except pickle.UnpicklingError as error:
        raise ModelFileError(
            f"{path} was not loaded: {error}. cellvi reads scvi-tools files as data only; "
            "this one is either not an scvi-tools model file or was tampered with."
        ) from error
    required = {SAVE_KEYS.MODEL_STATE_DICT_KEY, SAVE_KEYS.ATTR_DICT_KEY}
    if not isinstance(content, dict) or not required <= set(content):
        raise ModelFileError(f"{path} is not an scvi-tools model file (no model_state_dict).")
    attributes = content[SAVE_KEYS.ATTR_DICT_KEY]
    registry = _plain(attributes.get("registry_") or {})
    saved_class = registry.get("model_name")
    if saved_class != model_class:
        raise ModelFileError(
            f"{path} holds an scvi-tools {saved_class} model; load it with "
            f"{saved_class}.load, not {model_class}.load."
        )
    weights = {
        name: tensor
        for name, tensor in content[SAVE_KEYS.MODEL_STATE_DICT_KEY].items()
        if isinstance(tensor, torch.Tensor)  # scvi-tools also stores its Pyro param store here
    }
    description = {
        "model_class": saved_class,
        "init_params": _plain(attributes.get("init_params_") or {}),
        "registry": registry,
        "attributes": _training_attributes(attributes),
    }
    adata = None
    if read_adata:
        if not paths.adata.is_file():
            raise ModelFileError(
                f"{paths.directory} holds no AnnData (saved without save_anndata=True); pass "
                "the data: load(dir_path, adata=adata)."
            )
        adata = anndata.read_h5ad(paths.adata)
    return SavedModel(description, weights, adata, source="scvi-tools")


def has_scvi_tools_model(directory: Path, prefix: str) -> bool:
    """Whether ``directory`` holds an scvi-tools model file under ``prefix``."""
    return (directory / f"{prefix}{SAVE_KEYS.MODEL_FNAME}").is_file()


def _training_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """scvi-tools' training attributes in the layout of cellvi's ``TrainingState.to_json``."""
    history = attributes.get("history_")
    return {
        "is_trained_": bool(attributes.get("is_trained_", False)),
        "train_indices": _plain(attributes.get("train_indices_")),
        "validation_indices": _plain(attributes.get("validation_indices_")),
        "test_indices": _plain(attributes.get("test_indices_")),
        "history_": None
        if not history
        else {
            name: {"index": frame.index.tolist(), "values": frame.iloc[:, 0].tolist()}
            for name, frame in history.items()
            if isinstance(frame, pd.DataFrame) and frame.shape[1] >= 1
        },
    }


def _plain(value: Any) -> Any:
    """``value`` as plain JSON-able Python: arrays to lists, numpy scalars to numbers."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value
