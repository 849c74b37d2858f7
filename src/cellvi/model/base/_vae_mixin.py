"""``VAEMixin``: posterior queries shared by variational auto-encoder models."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from anndata import AnnData
from torch.distributions import Normal

from cellvi._checks import check_positive_int
from cellvi.model.base._queries import posterior_query
from cellvi.module._constants import MODULE_KEYS
from cellvi.utils import unsupported_if_adata_minified

Minibatches = Iterable[dict[str, torch.Tensor]]


class VAEMixin:
    """Add ELBO, marginal likelihood, reconstruction error and latent representation queries.

    Every query reads either ``adata`` (default: the training data; ``indices`` select cells,
    ``batch_size`` sizes the minibatches) or a ``dataloader`` of your own (an iterable of
    minibatch dicts keyed by ``REGISTRY_KEYS``), not both. As in scvi-tools, the figures come
    back as tensors (on the CPU) and latent representations as numpy arrays.
    """

    def _query_minibatches(
        self,
        adata: AnnData | None,
        indices: Sequence[int] | None,
        batch_size: int | None,
        dataloader: Minibatches | None,
        data_loader_kwargs: dict[str, Any] | None = None,
    ) -> Minibatches:
        """The minibatches a query reads: the given ``dataloader``, or one made for ``adata``."""
        if dataloader is None:
            return self._make_data_loader(
                adata=adata, indices=indices, batch_size=batch_size, **(data_loader_kwargs or {})
            )
        if adata is not None:
            raise ValueError("Give a query either adata or a dataloader, not both.")
        if indices is not None or batch_size is not None:
            raise ValueError(
                "indices and batch_size select cells of adata; with a dataloader, build it over "
                "the cells and minibatch size you want instead."
            )
        return dataloader

    @unsupported_if_adata_minified
    @posterior_query(untrained="warn")
    @torch.inference_mode()
    def get_elbo(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        dataloader: Minibatches | None = None,
        return_mean: bool = True,
        data_loader_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Evidence lower bound per cell, ``E_q[log p(x|z,l)] - KL`` (higher is better).

        Global KL terms, if a module has any, are shared equally by the cells. Returns the
        mean over cells (a 0-d tensor), or one value per cell with ``return_mean=False``;
        ``**kwargs`` go to the module's ``forward``.
        """
        per_cell = []
        for tensors in self._query_minibatches(
            adata, indices, batch_size, dataloader, data_loader_kwargs
        ):
            _, _, losses = self.module(tensors, **kwargs)
            negative_elbo = sum(losses.reconstruction_loss.values()) + sum(
                losses.kl_local.values()
            )
            per_cell.append((-(negative_elbo + losses.kl_global_sum)).cpu())
        values = torch.cat(per_cell)
        return values.mean() if return_mean else values

    @unsupported_if_adata_minified
    @posterior_query(untrained="warn")
    @torch.inference_mode()
    def get_marginal_ll(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        n_mc_samples: int = 1000,
        batch_size: int | None = None,
        return_mean: bool = True,
        dataloader: Minibatches | None = None,
        n_mc_samples_per_pass: int = 1,
        **kwargs: Any,
    ) -> float | torch.Tensor:
        """Importance-sampled ``log p(x)`` per cell (higher is better).

        Returns the mean over cells as a float, or one value per cell (a tensor) with
        ``return_mean=False``.
        """
        if not hasattr(self.module, "marginal_ll"):
            raise NotImplementedError(f"{type(self.module).__name__} has no marginal_ll method.")
        per_cell = [
            self.module.marginal_ll(
                tensors,
                n_mc_samples=n_mc_samples,
                n_mc_samples_per_pass=n_mc_samples_per_pass,
                **kwargs,
            ).cpu()
            for tensors in self._query_minibatches(adata, indices, batch_size, dataloader)
        ]
        values = torch.cat(per_cell)
        return float(values.mean()) if return_mean else values

    @unsupported_if_adata_minified
    @posterior_query(untrained="warn")
    @torch.inference_mode()
    def get_reconstruction_error(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        dataloader: Minibatches | None = None,
        return_mean: bool = True,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Reconstruction loss (negative log-likelihood) per term: the cell mean or per cell."""
        per_term: dict[str, list[torch.Tensor]] = {}
        for tensors in self._query_minibatches(adata, indices, batch_size, dataloader):
            _, _, losses = self.module(tensors, **kwargs)
            for name, values in losses.reconstruction_loss.items():
                per_term.setdefault(name, []).append(values.cpu())
        result = {name: torch.cat(chunks) for name, chunks in per_term.items()}
        return {name: v.mean() for name, v in result.items()} if return_mean else result

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
        dataloader: Minibatches | None = None,
        **data_loader_kwargs: Any,
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
        dataloader
            Minibatches of your own instead of ``adata``.
        **data_loader_kwargs
            Further arguments of the data loader made for ``adata``.
        """
        check_positive_int("mc_samples", mc_samples)
        latents, variances = [], []
        minibatches = self._query_minibatches(
            adata, indices, batch_size, dataloader, data_loader_kwargs
        )
        for tensors in minibatches:
            inference_inputs = self.module._get_inference_input(tensors)
            outputs = self.module.inference(**inference_inputs)
            qz = _posterior(outputs)
            if return_dist:
                latents.append(qz.loc.cpu())
                variances.append(qz.scale.square().cpu())
                continue
            if not give_mean:
                latent = outputs[MODULE_KEYS.Z_KEY]
            elif getattr(self.module, "latent_distribution", "normal") == "ln":
                latent = torch.softmax(qz.sample((mc_samples,)), dim=-1).mean(dim=0)
            else:
                latent = qz.loc
            latents.append(latent.cpu())
        if return_dist:
            return torch.cat(latents).numpy(), torch.cat(variances).numpy()
        return torch.cat(latents).numpy()


def _posterior(outputs: dict[str, Any]) -> Normal:
    """The posterior ``q(z|x)``: as ``qz``, or as its moments ``qzm`` / ``qzv`` (older modules)."""
    if MODULE_KEYS.QZ_KEY in outputs:
        return outputs[MODULE_KEYS.QZ_KEY]
    return Normal(outputs[MODULE_KEYS.QZM_KEY], outputs[MODULE_KEYS.QZV_KEY].sqrt())
