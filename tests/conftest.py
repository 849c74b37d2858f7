"""Suite-wide test settings."""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each xdist worker is one process per core; more torch threads than cores makes the
    # OpenMP threads of the workers spin against each other and slows every kernel down.
    torch.set_num_threads(1)

# The AnnData builders of the registration tests, shared by the data and model layers' tests.
pytest_plugins = ["tests._registration_fixtures"]

#: The devices a device-parametrised test runs on: the CPU always, CUDA where there is one.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``cuda``-marked tests where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
