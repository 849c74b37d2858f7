"""``VAEMixin``: posterior queries shared by variational auto-encoder models."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
    StudentT,
)

from cellvi._checks import check_positive_int
from cellvi.model.base._queries import Query, posterior_query
from cellvi.module._constants import MODULE_KEYS
from cellvi.plotting import plot_embedding
from cellvi.utils import unsupported_if_adata_minified

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Minibatches = Iterable[dict[str, torch.Tensor]]


def _counts_evaluation(method: Query) -> Query:
    """Guard a query that scores the counts: refused on minified data, warns when untrained."""
    return unsupported_if_adata_minified(
        posterior_query(untrained="warn")(torch.inference_mode()(method))
    )


class VAEMixin:
    """Add ELBO, marginal likelihood, reconstruction error, latent and abundance queries.

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

    @_counts_evaluation
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

    @_counts_evaluation
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

    @_counts_evaluation
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

    @posterior_query
    @torch.inference_mode()
    def get_aggregated_posterior(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        dof: float | None = 3.0,
    ) -> Distribution:
        """The aggregated posterior of the cells: an equal-weight mixture of their ``q(z|x)``.

        Each cell contributes one component centred on its posterior mean with its posterior
        standard deviation: a Student's t with ``dof`` degrees of freedom (heavier tails, so
        that a cell far from all components keeps a finite log-density), or a normal with
        ``dof=None``. (scvi-tools 1.4.2 passes the posterior *variance* as the components'
        scale; cellvi uses the standard deviation, the posterior's own spread.)

        Parameters
        ----------
        adata
            AnnData with the training genes; None uses the training data.
        indices
            Cells whose posteriors form the mixture; None or empty uses all.
        batch_size
            Minibatch size of the encoding.
        dof
            Degrees of freedom of the Student's t components; None for normal components.

        Returns
        -------
        A ``torch.distributions.MixtureSameFamily`` over latent vectors, on the model's device.
        """
        adata = self._validate_anndata(adata)
        if indices is None or len(indices) == 0:
            indices = None
        means, variances = self.get_latent_representation(
            adata, indices=indices, batch_size=batch_size, return_dist=True
        )
        loc = torch.as_tensor(means, device=self.device)
        scale = torch.as_tensor(variances, device=self.device).sqrt()
        components = Normal(loc, scale) if dof is None else StudentT(dof, loc, scale)
        return MixtureSameFamily(
            Categorical(logits=torch.zeros(loc.shape[0], device=self.device)),
            Independent(components, 1),
        )

    @posterior_query
    @torch.inference_mode()
    def differential_abundance(
        self,
        adata: AnnData | None = None,
        sample_key: str | None = None,
        batch_size: int = 128,
        num_cells_posterior: int | None = None,
        dof: float | None = None,
    ) -> None:
        """Log-density of each cell under the aggregated posterior of each sample.

        For every sample (a value of ``adata.obs[sample_key]``, in order of appearance) the
        aggregated posterior of its cells (at most ``num_cells_posterior`` of them, drawn at
        random) is built, and every cell's posterior mean is scored under it. A cell with a
        high log-density under one sample's posterior and a low one under another's lies in
        a region of the latent space that the first sample populates more.

        Writes ``adata.obsm["da_log_probs"]``: a cells x samples DataFrame.

        Parameters
        ----------
        adata
            AnnData with the training genes; None uses the training data.
        sample_key
            obs column of the samples.
        batch_size
            Minibatch size of the encoding and of the scoring.
        num_cells_posterior
            Most cells per sample in its aggregated posterior.
        dof
            Degrees of freedom of the components (see :meth:`get_aggregated_posterior`).
        """
        adata = self._validate_anndata(adata)
        if sample_key is None or sample_key not in adata.obs:
            raise KeyError(f"sample_key={sample_key!r} is not a column of adata.obs.")
        latent = torch.as_tensor(
            self.get_latent_representation(adata, batch_size=batch_size), device=self.device
        )
        samples = pd.unique(adata.obs[sample_key].to_numpy())
        columns = []
        for sample in samples:
            cells = np.flatnonzero((adata.obs[sample_key] == sample).to_numpy())
            if num_cells_posterior is not None and num_cells_posterior < len(cells):
                cells = np.sort(np.random.choice(cells, num_cells_posterior, replace=False))
            posterior = self.get_aggregated_posterior(
                adata, indices=cells, batch_size=batch_size, dof=dof
            )
            columns.append(
                torch.cat([posterior.log_prob(chunk) for chunk in latent.split(batch_size)]).cpu()
            )
        log_probs = torch.stack(columns, dim=1).numpy()
        adata.obsm["da_log_probs"] = pd.DataFrame(
            log_probs, index=adata.obs_names, columns=samples
        )

    def plot_latent(
        self,
        adata: AnnData | None = None,
        color: str | Sequence[str] | None = None,
        method: Literal["auto", "umap", "pca"] = "auto",
        latent: np.ndarray | None = None,
        seed: int = 0,
        path: str | Path | None = None,
        **plot_kwargs: Any,
    ) -> Figure:
        """Plot the cells' latent representation in two dimensions, coloured by obs columns.

        UMAP when umap-learn or scanpy is installed (``pip install 'cellvi[umap]'``), the
        first two principal components otherwise (see
        :func:`cellvi.plotting.embedding_coordinates`). Needs matplotlib (``cellvi[plot]``).

        Parameters
        ----------
        adata
            AnnData with the training genes; None uses the training data.
        color
            obs column(s) to colour by, one panel each; default the registered batch and
            labels columns (those given to ``setup_anndata``), or one plain panel.
        method
            ``"auto"``, ``"umap"`` or ``"pca"``.
        latent
            The latent representation of ``adata``'s cells, if already computed (else
            :meth:`get_latent_representation`).
        seed
            Seed of the UMAP layout and of the drawing order.
        path
            Also write the figure there (PNG unless the suffix says otherwise).
        **plot_kwargs
            Further :func:`cellvi.plotting.plot_embedding` arguments (``title``,
            ``point_size``, ``panel_size``, ``dpi``).

        Returns
        -------
        The matplotlib ``Figure``.
        """
        adata = self._validate_anndata(adata)
        if color is None:
            setup = self.get_anndata_manager(adata, required=True).registry["setup_args"]
            keys = [setup.get("batch_key"), setup.get("labels_key")]
            color = [key for key in keys if key is not None]
        elif isinstance(color, str):
            color = [color]
        missing = [key for key in color if key not in adata.obs]
        if missing:
            raise KeyError(
                f"No obs column {missing[0]!r} to colour by; adata.obs has "
                f"{list(adata.obs.columns)}."
            )
        if latent is None:
            latent = self.get_latent_representation(adata)
        groups = {key: adata.obs[key] for key in dict.fromkeys(color)}
        plot_kwargs.setdefault("title", f"{type(self).__name__} latent space")
        return plot_embedding(
            latent, groups or None, method=method, seed=seed, path=path, **plot_kwargs
        )


def _posterior(outputs: dict[str, Any]) -> Normal:
    """The posterior ``q(z|x)``: as ``qz``, or as its moments ``qzm`` / ``qzv`` (older modules)."""
    if MODULE_KEYS.QZ_KEY in outputs:
        return outputs[MODULE_KEYS.QZ_KEY]
    return Normal(outputs[MODULE_KEYS.QZM_KEY], outputs[MODULE_KEYS.QZV_KEY].sqrt())
