"""Per-epoch sums of logged metrics, accumulated on the device."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from cellvi.module.base import LossOutput


class EpochSums:
    """Running sums of one epoch's metrics (one train or validation pass).

    Per-cell metrics are summed over cells and divided by the number of cells; per-minibatch
    metrics are summed over minibatches and divided by their number. The sums stay tensors on
    the module's device, so ``update`` never waits for the GPU; they are read once per epoch.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the sums of the previous epoch."""
        self._cell_sums: dict[str, torch.Tensor] = {}
        self._batch_sums: dict[str, torch.Tensor] = {}
        self.n_obs = 0
        self.n_batches = 0
        self._last: tuple[int, dict, dict] | None = None

    def update(
        self,
        n_obs: int,
        cell_sums: dict[str, torch.Tensor],
        batch_values: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Add one minibatch: sums over its ``n_obs`` cells, and whole-minibatch values."""
        cell_sums, batch_values = _detached(cell_sums), _detached(batch_values)
        for sums, values in ((self._cell_sums, cell_sums), (self._batch_sums, batch_values)):
            for name, value in values.items():
                sums[name] = sums[name] + value if name in sums else value
        self.n_obs += n_obs
        self.n_batches += 1
        self._last = (n_obs, cell_sums, batch_values)

    def sum_across(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace these sums by their totals over the processes of a distributed fit.

        ``reduce_sum`` sums a tensor over the processes (every process calls it, in the same
        order); afterwards :meth:`compute` gives the metrics of all the cells of the epoch.
        """
        for sums in (self._cell_sums, self._batch_sums):
            for name in sorted(sums):
                sums[name] = reduce_sum(sums[name])
        device = next(iter(self._cell_sums.values()), torch.zeros(())).device
        counts = reduce_sum(torch.tensor([self.n_obs, self.n_batches], device=device))
        self.n_obs, self.n_batches = (int(count) for count in counts.tolist())

    def compute_last(self) -> dict[str, torch.Tensor]:
        """The metrics of the last minibatch alone (empty before the first)."""
        if self._last is None:
            return {}
        alone = type(self)()
        alone.update(*self._last)
        return alone.compute()

    def compute(self) -> dict[str, torch.Tensor]:
        """The epoch's metrics: per-cell means and per-minibatch means (empty if no batch)."""
        if self.n_obs == 0:
            return {}
        metrics = {name: value / self.n_obs for name, value in self._cell_sums.items()}
        metrics.update({name: value / self.n_batches for name, value in self._batch_sums.items()})
        return metrics


def _detached(values: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    return {name: torch.as_tensor(v).detach().float() for name, v in (values or {}).items()}


class EpochElboSums(EpochSums):
    """The ELBO terms of a :class:`LossOutput` over one epoch.

    ``compute`` returns ``reconstruction_loss`` and ``kl_local`` per cell, ``kl_global`` as the
    mean over minibatches (a global term is the same whole-model quantity in every minibatch,
    so summing it would count it once per minibatch), ``elbo`` = the sum of the three (the
    per-cell negative ELBO, without KL warm-up), and ``loss``, the cell-weighted mean of the
    minimised loss.
    """

    def update_from(self, output: LossOutput) -> None:
        """Add one minibatch's loss output."""
        n_obs = output.n_obs_minibatch
        self.update(
            n_obs,
            {
                "reconstruction_loss": output.reconstruction_loss_sum,
                "kl_local": output.kl_local_sum,
                # ``loss`` is a minibatch mean: weight it by cells so uneven batches average.
                "loss": output.loss.detach().float() * n_obs,
            },
            {"kl_global": output.kl_global_sum},
        )

    def compute(self) -> dict[str, torch.Tensor]:
        """The epoch's ELBO terms, ``elbo`` first (see the class docstring)."""
        metrics = super().compute()
        if not metrics:
            return metrics
        elbo = metrics["reconstruction_loss"] + metrics["kl_local"] + metrics["kl_global"]
        return {
            "elbo": elbo,
            "reconstruction_loss": metrics["reconstruction_loss"],
            "kl_local": metrics["kl_local"],
            "kl_global": metrics["kl_global"],
            "loss": metrics["loss"],
        }
