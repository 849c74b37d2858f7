"""Numpy arrays and pandas tables in model files' JSON, as tagged plain data (never pickles).

Packages built on scvi-tools pass arrays and DataFrames to their models' ``__init__`` (e.g.
reference signatures), which scvi-tools pickles into its model files. cellvi's files hold
JSON only, so such values are written as tagged objects of plain lists and read back as the
same types; nothing in them is ever executed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

TAG = "__cellvi_value__"
# Array kinds stored as numbers or strings: bool, signed/unsigned integer, float, unicode.
_ARRAY_KINDS = "biufU"


def to_json_values(value: Any) -> Any:
    """``value`` with arrays, numpy scalars and pandas objects as tagged plain data."""
    if isinstance(value, dict):
        return {key: to_json_values(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_values(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return _array(value)
    if isinstance(value, pd.DataFrame):
        return {
            TAG: "DataFrame",
            "index": _array(value.index.to_numpy()),
            "columns": _array(value.columns.to_numpy()),
            "data": [_array(value[column].to_numpy()) for column in value.columns],
        }
    if isinstance(value, pd.Series):
        return {
            TAG: "Series",
            "name": to_json_values(value.name),
            "index": _array(value.index.to_numpy()),
            "data": _array(value.to_numpy()),
        }
    return value


def from_json_values(value: Any) -> Any:
    """The inverse of :func:`to_json_values`; a malformed tagged object is a ``ValueError``."""
    if isinstance(value, list):
        return [from_json_values(item) for item in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(TAG)
    if kind is None:
        return {key: from_json_values(item) for key, item in value.items()}
    try:
        if kind == "ndarray":
            return _read_array(value)
        if kind == "DataFrame":
            columns = _read_array(value["columns"])
            data = {
                name: _read_array(item) for name, item in zip(columns, value["data"], strict=True)
            }
            return pd.DataFrame(data, index=_read_array(value["index"]), columns=columns)
        if kind == "Series":
            return pd.Series(
                _read_array(value["data"]),
                index=_read_array(value["index"]),
                name=from_json_values(value["name"]),
            )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"A stored {kind} value is malformed: {error}") from error
    raise ValueError(f"Unknown stored value kind {kind!r}.")


def _array(array: np.ndarray) -> dict[str, Any]:
    if array.dtype.kind == "O" and all(isinstance(item, str) for item in array.ravel()):
        array = array.astype(str)
    if array.dtype.kind not in _ARRAY_KINDS:
        raise TypeError(
            f"An array of dtype {array.dtype} cannot be stored: model files hold numbers and "
            "strings only."
        )
    dtype = "str" if array.dtype.kind == "U" else array.dtype.str
    return {TAG: "ndarray", "dtype": dtype, "shape": list(array.shape), "data": array.tolist()}


def _read_array(stored: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(str) if stored["dtype"] == "str" else np.dtype(stored["dtype"])
    if dtype.kind not in _ARRAY_KINDS:
        raise ValueError(f"dtype {stored['dtype']!r} is not one model files store")
    return np.asarray(stored["data"], dtype=dtype).reshape(stored["shape"])
