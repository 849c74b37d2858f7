"""Per-epoch sums of the ELBO terms, accumulated on the device."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from cellvi.module.base import LossOutput


class EpochElboSums:
    """Running sums of a minibatch's loss terms over one epoch (one train or validation pass).

    The sums stay tensors on the module's device, so ``update`` never waits for the GPU; the
    values are read once per epoch, when the logger converts them.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the sums of the previous epoch."""
        # Python zeros become device tensors on the first update, wherever the module lives.
        self.loss: torch.Tensor | float = 0.0
        self.reconstruction_loss: torch.Tensor | float = 0.0
        self.kl_local: torch.Tensor | float = 0.0
        self.kl_global: torch.Tensor | float = 0.0
        self.n_obs = 0
        self.n_batches = 0

    def update(self, output: LossOutput) -> None:
        """Add one minibatch's terms."""
        n_obs = output.n_obs_minibatch
        # ``loss`` is a minibatch mean: weight it by cells so uneven batches average correctly.
        self.loss = self.loss + output.loss.detach().float() * n_obs
        self.reconstruction_loss = (
            self.reconstruction_loss + output.reconstruction_loss_sum.detach().float()
        )
        self.kl_local = self.kl_local + output.kl_local_sum.detach().float()
        self.kl_global = self.kl_global + output.kl_global_sum.detach().float()
        self.n_obs += n_obs
        self.n_batches += 1

    def compute(self) -> dict[str, torch.Tensor]:
        """Return the epoch's per-cell metrics (empty when no minibatch was seen).

        Returns
        -------
        dict
            ``reconstruction_loss`` and ``kl_local`` per cell, ``kl_global`` as the mean over
            minibatches (a global term is the same whole-model quantity in every minibatch, so
            summing it would count it once per minibatch), ``elbo`` = the sum of the three
            (the per-cell negative ELBO, without KL warm-up), and ``loss``, the cell-weighted
            mean of the minimised loss.
        """
        if self.n_obs == 0:
            return {}
        reconstruction_loss = torch.as_tensor(self.reconstruction_loss) / self.n_obs
        kl_local = torch.as_tensor(self.kl_local) / self.n_obs
        kl_global = torch.as_tensor(self.kl_global) / self.n_batches
        return {
            "elbo": reconstruction_loss + kl_local + kl_global,
            "reconstruction_loss": reconstruction_loss,
            "kl_local": kl_local,
            "kl_global": kl_global,
            "loss": torch.as_tensor(self.loss) / self.n_obs,
        }
