"""Suite-wide test settings."""

from __future__ import annotations

import os

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each xdist worker is one process per core; more torch threads than cores makes the
    # OpenMP threads of the workers spin against each other and slows every kernel down.
    torch.set_num_threads(1)
