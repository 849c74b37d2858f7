"""``cellvi.settings``: seeding, defaults, verbosity."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import cellvi


@pytest.fixture(autouse=True)
def _restore_settings():
    yield
    cellvi.settings.seed = None
    cellvi.settings.verbosity = logging.WARNING


def test_version_and_defaults() -> None:
    assert isinstance(cellvi.__version__, str) and cellvi.__version__.count(".") >= 2
    assert cellvi.settings.batch_size == 128
    assert cellvi.settings.dl_num_workers == 0
    assert "batch_size=128" in repr(cellvi.settings)


def test_seed_makes_every_generator_reproducible() -> None:
    draws = []
    for _ in range(2):
        cellvi.settings.seed = 7
        draws.append((np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]
    assert cellvi.settings.seed == 7


@pytest.mark.parametrize("bad", ["7", 1.5, True])
def test_seed_must_be_an_int(bad) -> None:
    with pytest.raises(TypeError, match="settings.seed must be an int"):
        cellvi.settings.seed = bad


def test_verbosity_by_name_and_number() -> None:
    cellvi.settings.verbosity = "info"
    assert logging.getLogger("cellvi").level == logging.INFO
    cellvi.settings.verbosity = logging.ERROR
    assert cellvi.settings.verbosity == logging.ERROR
    with pytest.raises(ValueError, match="Unknown verbosity"):
        cellvi.settings.verbosity = "chatty"


def test_registry_keys_are_the_documented_names() -> None:
    keys = cellvi.REGISTRY_KEYS
    assert (keys.X_KEY, keys.BATCH_KEY, keys.LABELS_KEY) == ("X", "batch", "labels")
    assert keys.SIZE_FACTOR_KEY == "size_factor"
    assert keys.CAT_COVS_KEY == "extra_categorical_covs"
    assert keys.CONT_COVS_KEY == "extra_continuous_covs"
