"""The comparison worker's held-out figures: per-cell means, however a library averages."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _quality_worker import heldout_figures


class _MinibatchAveragingModel:
    """Stands in for scvi-tools 1.4: ``return_mean=True`` averages the minibatch means.

    Per-cell values come back as torch tensors; the test cells go in minibatches of 128.
    """

    def __init__(self, per_cell: dict[str, np.ndarray]) -> None:
        self.per_cell = per_cell

    def _answer(self, name: str, indices: np.ndarray, return_mean: bool):
        values = torch.as_tensor(self.per_cell[name][indices])
        if not return_mean:
            return values
        return float(np.mean([chunk.mean().item() for chunk in values.split(128)]))

    def get_elbo(self, indices, return_mean=True):
        return self._answer("elbo", indices, return_mean)

    def get_marginal_ll(self, indices, n_mc_samples, return_mean=True):
        return self._answer("marginal_ll", indices, return_mean)

    def get_reconstruction_error(self, indices, return_mean=True):
        return {"reconstruction_loss": self._answer("reconstruction", indices, return_mean)}


@pytest.fixture
def model() -> _MinibatchAveragingModel:
    rng = np.random.default_rng(0)
    # The last cells are much worse, so a short last minibatch weighs visibly in a mean of means.
    worse_tail = np.where(np.arange(300) >= 256, 50.0, 0.0)
    per_cell = {
        name: rng.normal(size=300) - worse_tail
        for name in ("elbo", "marginal_ll", "reconstruction")
    }
    return _MinibatchAveragingModel(per_cell)


def test_scvi_figures_are_means_over_cells_not_over_minibatches(model):
    test = np.arange(300)
    figures = heldout_figures(model, "SCVI", test, n_mc_samples=10)
    assert set(figures) == {"heldout_elbo", "heldout_marginal_ll"}
    for key, name in (("heldout_elbo", "elbo"), ("heldout_marginal_ll", "marginal_ll")):
        mean_of_minibatch_means = model._answer(name, test, return_mean=True)
        assert figures[key] == pytest.approx(model.per_cell[name].mean())
        assert abs(figures[key] - mean_of_minibatch_means) > 1.0


def test_condscvi_figures_report_the_reconstruction_loss_per_cell(model):
    test = np.arange(10, 300)
    figures = heldout_figures(model, "CondSCVI", test, n_mc_samples=10)
    assert set(figures) == {"heldout_elbo", "heldout_reconstruction_loss"}
    assert figures["heldout_reconstruction_loss"] == pytest.approx(
        model.per_cell["reconstruction"][test].mean()
    )
