"""Arrays and pandas tables among init parameters: stored as plain JSON data, read back alike."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cellvi.model.base._json_values import TAG, from_json_values, to_json_values


def _round_trip(value):
    return from_json_values(json.loads(json.dumps(to_json_values(value))))


def test_arrays_tables_and_scalars_come_back_with_their_types():
    signatures = np.arange(12, dtype=np.float32).reshape(3, 4)
    table = pd.DataFrame(
        {"weight": [0.5, 1.5], "name": ["B cell", "T cell"], "n": np.array([3, 4], np.int64)},
        index=["a", "b"],
    )
    series = pd.Series([1.0, 2.0], index=["x", "y"], name="scale")
    value = {
        "signatures": signatures,
        "table": table,
        "series": series,
        "nested": [np.int64(3), (np.bool_(True), np.array(["u", "v"]))],
    }
    back = _round_trip(value)
    np.testing.assert_array_equal(back["signatures"], signatures)
    assert back["signatures"].dtype == np.float32 and back["signatures"].shape == (3, 4)
    pd.testing.assert_frame_equal(back["table"], table)
    pd.testing.assert_series_equal(back["series"], series)
    assert back["nested"][0] == 3 and back["nested"][1][0] is True
    np.testing.assert_array_equal(back["nested"][1][1], ["u", "v"])


def test_objects_that_are_not_data_are_refused_and_tampering_is_an_error():
    with pytest.raises(TypeError, match="numbers and strings"):
        to_json_values(np.array([object(), 1], dtype=object))
    with pytest.raises(ValueError, match="malformed|not one"):
        from_json_values({TAG: "ndarray", "dtype": "|O", "shape": [1], "data": [1]})
    with pytest.raises(ValueError, match="malformed"):
        from_json_values({TAG: "ndarray", "dtype": "<f4", "shape": [5], "data": [1.0]})
    with pytest.raises(ValueError, match="Unknown"):
        from_json_values({TAG: "pickle", "data": "..."})
