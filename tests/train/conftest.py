"""Fixtures of the training tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch

import cellvi

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("lightning.fabric").setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def _tiny_fits(tmp_path, monkeypatch) -> Iterator[None]:
    """One torch thread (tiny fits on shared cores), logs under ``tmp_path``, seed unset after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    logging_dir = cellvi.settings.logging_dir
    cellvi.settings.logging_dir = tmp_path / "logs"
    monkeypatch.chdir(tmp_path)
    yield
    torch.set_num_threads(previous)
    cellvi.settings.logging_dir = logging_dir
    cellvi.settings.seed = None
