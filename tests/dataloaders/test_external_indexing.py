"""``DataSplitter(external_indexing=...)``: user-given splits, used as given or clearly refused."""

from __future__ import annotations

import numpy as np
import pytest

from cellvi.dataloaders import DataSplitter
from cellvi.dataloaders._external_indexing import ExternalIndexingError

ORDER = np.random.default_rng(0).permutation(50)
TRAIN, VALID, TEST = ORDER[:30], ORDER[30:40], ORDER[40:]
ORDER_SPLITS = (TRAIN, VALID, TEST)


def test_valid_external_indexing_bypasses_sizes(manager):
    splitter = DataSplitter(
        manager, train_size=0.1, validation_size=0.5, external_indexing=[TRAIN, VALID, TEST]
    )
    for got, given in zip(
        (splitter.train_idx, splitter.val_idx, splitter.test_idx), ORDER_SPLITS, strict=True
    ):
        np.testing.assert_array_equal(got, given)
    np.testing.assert_array_equal(splitter.train_dataloader().indices, TRAIN)
    only_train = DataSplitter(manager, external_indexing=[ORDER])
    assert only_train.val_idx.size == only_train.test_idx.size == 0


@pytest.mark.parametrize(
    "external_indexing",
    [
        [ORDER[:40], ORDER[40:]],
        [ORDER[:40], ORDER[40:], None],
        (ORDER[:40], ORDER[40:], np.array(None)),
        [ORDER[:40], ORDER[40:], np.array([], dtype=int)],
        [ORDER[:40], None, ORDER[40:]],
    ],
)
def test_missing_splits_may_be_left_out_none_or_empty(manager, external_indexing):
    splitter = DataSplitter(manager, external_indexing=external_indexing)
    np.testing.assert_array_equal(splitter.train_idx, ORDER[:40])
    held_out = splitter.val_idx if splitter.val_idx.size else splitter.test_idx
    np.testing.assert_array_equal(held_out, ORDER[40:])
    assert splitter.val_idx.dtype == splitter.test_idx.dtype == np.int64
    empty = splitter.test_dataloader if splitter.val_idx.size else splitter.val_dataloader
    assert empty() == []


@pytest.mark.parametrize(
    ("external_indexing", "message"),
    [
        ([np.append(TRAIN, TRAIN[0]), VALID, TEST], "There are duplicate indexing in train set"),
        ([TRAIN, np.append(VALID, VALID[0]), TEST], "There are duplicate indexing in valid set"),
        ([TRAIN, VALID, np.append(TEST, TEST[0])], "There are duplicate indexing in test set"),
        ([TRAIN, VALID], "There are missing indices please fix or remove those lines"),
        ([], "There are missing indices please fix or remove those lines"),
    ],
)
def test_duplicated_or_missing_cells_are_errors_and_warnings(manager, external_indexing, message):
    with pytest.raises(ExternalIndexingError) as error:
        DataSplitter(manager, external_indexing=external_indexing)
    # scvi-tools raises a bare Warning here: the error is both, so either ``except`` works.
    assert isinstance(error.value, ValueError) and isinstance(error.value, Warning)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("external_indexing", "message"),
    [
        ([TRAIN, np.append(VALID, TRAIN[0]), TEST], "between train and valid sets"),
        ([np.append(TRAIN, TEST[0]), VALID, TEST], "between train and test sets"),
        ([TRAIN, np.append(VALID, TEST[0]), TEST], "between test and valid sets"),
        ([np.array([], dtype=int), ORDER[:10], ORDER[10:]], "train indices are empty"),
        ([ORDER[:10], ORDER[10:], None, None], "at most 3 index arrays .* got 4 entries"),
        (ORDER, "External indexing is not of list type"),
        (
            [list(TRAIN), VALID, TEST],
            "One of the given external indexing arrays is not a np.array",
        ),
        ([[TRAIN], VALID, TEST], "One of the given external indexing arrays is not a np.array"),
        ([np.append(ORDER, 50)], r"\(train\): index 50 is out of range for 50 cells"),
        ([ORDER, np.array([-1])], r"\(valid\): index -1 is out of range"),
        ([ORDER.astype(float)], "train indices must be integers, got dtype float64"),
        ([ORDER, np.array(["a"])], "valid indices must be integers"),
        ([np.ones(50, dtype=bool)], "train indices must be integers, got dtype bool"),
        ([ORDER.reshape(5, 10)], r"must be a 1-D array, got shape \(5, 10\)"),
    ],
)
def test_invalid_external_indexing_raises_naming_the_problem(manager, external_indexing, message):
    with pytest.raises(ValueError, match=message) as error:
        DataSplitter(manager, external_indexing=external_indexing)
    assert not isinstance(error.value, Warning)


def test_a_tiny_last_batch_of_given_splits_only_warns(manager):
    with pytest.warns(UserWarning, match="has 2 cells"):
        splitter = DataSplitter(manager, batch_size=14, external_indexing=[TRAIN, VALID, TEST])
    assert splitter.n_train == 30 and not splitter.drop_last
