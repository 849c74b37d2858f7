"""``VAEMixin``: posterior queries shared by variational auto-encoder models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from anndata import AnnData
from torch.distributions import Normal

from cellvi._checks import check_positive_int
from cellvi.model.base._queries import posterior_query


class VAEMixin:
    """Add ELBO, marginal likelihood, reconstruction error and latent representation queries."""

    @posterior_query(untrained="warn")
    @torch.inference_mode()
    def get_elbo(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        return_mean: bool = True,
    ) -> float | np.ndarray:
        """Evidence lower bound per cell, ``E_q[log p(x|z,l)] - KL`` (higher is better).

        Global KL terms, if a module has any, are shared equally by the cells. Returns the
        mean over cells, or one value per cell with ``return_mean=False``.
        """
        per_cell = []
        for tensors in self._make_dataloader(adata=adata, indices=indices, batch_size=batch_size):
            _, _, losses = self.module(tensors)
            negative_elbo = sum(losses.reconstruction_loss.values()) + sum(
                losses.kl_local.values()
            )
            per_cell.append((-(negative_elbo + losses.kl_global_sum)).cpu())
        values = torch.cat(per_cell).numpy()
        return float(values.mean()) if return_mean else values

    @posterior_query(untrained="warn")
    @torch.inference_mode()
    def get_marginal_ll(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        n_mc_samples: int = 1000,
        batch_size: int | None = None,
        return_mean: bool = True,
        n_mc_samples_per_pass: int = 1,
    ) -> float | np.ndarray:
        """Importance-sampled ``log p(x)`` per cell (higher is better); the mean by default."""
        if not hasattr(self.module, "marginal_ll"):
            raise NotImplementedError(f"{type(self.module).__name__} has no marginal_ll method.")
        per_cell = [
            self.module.marginal_ll(
                tensors, n_mc_samples=n_mc_samples, n_mc_samples_per_pass=n_mc_samples_per_pass
            ).cpu()
            for tensors in self._make_dataloader(
                adata=adata, indices=indices, batch_size=batch_size
            )
        ]
        values = torch.cat(per_cell).numpy()
        return float(values.mean()) if return_mean else values

    @posterior_query(untrained="warn")
    @torch.inference_mode()
    def get_reconstruction_error(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        return_mean: bool = True,
    ) -> dict[str, float | np.ndarray]:
        """Reconstruction loss (negative log-likelihood) per term: the cell mean or per cell."""
        per_term: dict[str, list[torch.Tensor]] = {}
        for tensors in self._make_dataloader(adata=adata, indices=indices, batch_size=batch_size):
            _, _, losses = self.module(tensors)
            for name, values in losses.reconstruction_loss.items():
                per_term.setdefault(name, []).append(values.cpu())
        result = {name: torch.cat(chunks).numpy() for name, chunks in per_term.items()}
        return {name: float(v.mean()) for name, v in result.items()} if return_mean else result

    @posterior_query
    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        mc_samples: int = 5000,
        batch_size: int | None = None,
        return_dist: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Latent representation of each cell: the posterior mean (or a sample).

        Parameters
        ----------
        adata
            AnnData with the training genes; None uses the training data.
        indices
            Cells to use; None uses all.
        give_mean
            Posterior mean (for a logistic-normal latent, a Monte Carlo mean of
            ``mc_samples`` draws); else one posterior draw.
        mc_samples
            Draws for the logistic-normal mean.
        batch_size
            Minibatch size (default ``cellvi.settings.batch_size``).
        return_dist
            Return the posterior's ``(means, variances)`` instead.
        """
        check_positive_int("mc_samples", mc_samples)
        latents, variances = [], []
        for tensors in self._make_dataloader(adata=adata, indices=indices, batch_size=batch_size):
            inference_inputs = self.module._get_inference_input(tensors)
            outputs = self.module.inference(**inference_inputs)
            qz: Normal = outputs["qz"]
            if return_dist:
                latents.append(qz.loc.cpu())
                variances.append(qz.scale.square().cpu())
                continue
            if not give_mean:
                latent = outputs["z"]
            elif getattr(self.module, "latent_distribution", "normal") == "ln":
                latent = torch.softmax(qz.sample((mc_samples,)), dim=-1).mean(dim=0)
            else:
                latent = qz.loc
            latents.append(latent.cpu())
        if return_dist:
            return torch.cat(latents).numpy(), torch.cat(variances).numpy()
        return torch.cat(latents).numpy()
