"""Fixtures of module tests."""

from __future__ import annotations

import pytest
import torch

from ._inputs import make_tensors


@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    return make_tensors()
