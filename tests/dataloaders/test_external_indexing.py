"""``DataSplitter(external_indexing=...)``: user-given splits, used as given or clearly refused."""

from __future__ import annotations

import numpy as np
import pytest

from cellvi.dataloaders import DataSplitter


def test_valid_external_indexing_bypasses_sizes(manager):
    train, valid = np.array([1, 2, 3, 10]), np.array([4, 5, 6])
    splitter = DataSplitter(
        manager, train_size=0.1, validation_size=0.5, external_indexing=[train, valid, None]
    )
    np.testing.assert_array_equal(splitter.train_idx, train)
    np.testing.assert_array_equal(splitter.val_idx, valid)
    assert splitter.test_idx.size == 0 and splitter.test_idx.dtype == np.int64
    assert splitter.test_dataloader() == []
    np.testing.assert_array_equal(splitter.train_dataloader().indices, train)


@pytest.mark.parametrize(
    "missing", [None, np.array(None), np.array([], dtype=int), [], np.array([])]
)
def test_missing_validation_and_test_may_be_none_or_empty(manager, missing):
    splitter = DataSplitter(manager, external_indexing=(np.arange(5), missing, missing))
    assert splitter.val_idx.size == 0 and splitter.test_idx.size == 0
    assert splitter.val_dataloader() == []


def test_the_three_splits_may_cover_every_cell(manager):
    order = np.random.default_rng(0).permutation(50)
    splitter = DataSplitter(manager, external_indexing=[order[:30], order[30:40], order[40:]])
    everything = np.concatenate([splitter.train_idx, splitter.val_idx, splitter.test_idx])
    np.testing.assert_array_equal(np.sort(everything), np.arange(50))


@pytest.mark.parametrize(
    ("external_indexing", "message"),
    [
        ([np.array([1, 3, 3, 5, 5]), None, None], r"train indices contain duplicates: \[3, 5\]"),
        ([np.array([1]), np.array([2, 2]), None], r"validation indices contain duplicates: \[2\]"),
        (
            [np.array([1, 3, 5, 7]), np.array([3, 5, 8]), None],
            r"indices \[3, 5\] appear in both train and validation",
        ),
        (
            [np.array([1, 2]), None, np.array([2, 9])],
            r"indices \[2\] appear in both train and test",
        ),
        (
            [np.array([1]), np.array([4, 6]), np.array([6])],
            r"indices \[6\] appear in both validation and test",
        ),
        ([np.array([0, 50]), None, None], "index 50 is out of range for 50 cells"),
        ([np.array([0, 1]), np.array([51]), None], r"\(validation\): index 51 is out of range"),
        ([np.array([-1, 2]), None, None], "index -1 is out of range for 50 cells"),
        ([np.array([], dtype=int), np.array([1]), None], "train indices are empty"),
        ([None, np.array([1]), None], "train indices are empty"),
        ([np.array([1, 2]), np.array([3])], "list of 3 index arrays .* got 2 entries"),
        ([np.array([1]), None, None, None], "got 4 entries"),
        (np.array([1, 2, 3]), "list of 3 index arrays .* got ndarray"),
        ([np.array([0.5, 1.0]), None, None], "train indices must be integers, got dtype float64"),
        ([np.array([1]), np.array(["a"]), None], "validation indices must be integers"),
        ([np.ones(50, dtype=bool), None, None], "train indices must be integers, got dtype bool"),
        ([np.zeros((2, 2), dtype=int), None, None], r"must be a 1-D array, got shape \(2, 2\)"),
    ],
)
def test_invalid_external_indexing_raises_naming_the_problem(manager, external_indexing, message):
    with pytest.raises(ValueError, match=message):
        DataSplitter(manager, external_indexing=external_indexing)
