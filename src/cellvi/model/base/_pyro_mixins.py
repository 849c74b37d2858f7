"""``PyroSampleMixin``: summaries of posterior draws of a Pyro-backed model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyro
import torch
from anndata import AnnData

from cellvi.model.base._queries import posterior_query
from cellvi.module.base._pyro_module import private_param_store

logger = logging.getLogger("cellvi")

SummaryFun = Callable[[np.ndarray], np.ndarray]
Samples = dict[str, list[np.ndarray]]


def _default_summaries() -> dict[str, SummaryFun]:
    return {
        "means": lambda x: x.mean(axis=0),
        "stds": lambda x: x.std(axis=0),
        "q05": lambda x: np.quantile(x, 0.05, axis=0),
        "q50": lambda x: np.quantile(x, 0.5, axis=0),
        "q95": lambda x: np.quantile(x, 0.95, axis=0),
    }


class PyroSampleMixin:
    """Add ``sample_posterior``: summaries of posterior draws of a Pyro module's sites."""

    @posterior_query
    @torch.no_grad()
    def sample_posterior(
        self,
        num_samples: int = 1000,
        return_sites: Sequence[str] | None = None,
        batch_size: int | None = None,
        return_observed: bool = False,
        summary_fun: dict[str, SummaryFun] | None = None,
        indices: Sequence[int] | None = None,
        adata: AnnData | None = None,
    ) -> dict[str, dict[str, np.ndarray]]:
        """Summarise ``num_samples`` posterior draws of every site, per cell for local sites.

        Each draw runs the guide, then the model replayed on the guide's latent values. Sites
        in the module's obs plate (``list_obs_plate_vars``) are summarised per minibatch and
        concatenated along the plate's axis; global sites are summarised from the first
        minibatch's draws. A module declaring no obs plate is run on all cells at once.

        Parameters
        ----------
        num_samples
            Posterior draws per minibatch.
        return_sites
            Sites to summarise; None means every latent site (and observed ones with
            ``return_observed``).
        batch_size
            Minibatch size (default ``cellvi.settings.batch_size``).
        return_observed
            Also summarise observed sites, as posterior predictive draws from their
            likelihood.
        summary_fun
            ``{name: function}`` of reductions over axis 0 (the draws); default means, stds and
            the 5%, 50% and 95% quantiles (``q05``, ``q50``, ``q95``).
        indices
            Cells to use; None uses all.
        adata
            AnnData with the training setup; None uses the training data.

        Returns
        -------
        dict
            ``{summary name: {site name: array}}``; a local site's arrays have the cells along
            the plate's axis, in the order of ``indices``.
        """
        module = self.module
        plate = module.list_obs_plate_vars
        if not plate.get("name") and not plate.get("in"):
            adata_ = self._validate_anndata(adata)
            batch_size = adata_.n_obs if indices is None else max(len(indices), 1)
        summaries = _default_summaries() if summary_fun is None else summary_fun
        local: Samples = {}
        glob: dict[str, np.ndarray] = {}
        axes: dict[str, int] = {}
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        for tensors in loader:
            draws = _draw(module, tensors, num_samples, return_sites, return_observed, plate)
            for site, (values, axis) in draws.items():
                if axis is None:
                    glob.setdefault(site, values)
                else:
                    axes[site] = axis
                    local.setdefault(site, []).append(values)
        results: dict[str, dict[str, np.ndarray]] = {name: {} for name in summaries}
        for name, fun in summaries.items():
            for site, chunks in local.items():
                results[name][site] = np.concatenate([fun(c) for c in chunks], axis=axes[site])
            for site, values in glob.items():
                results[name][site] = fun(values)
        return results


def _draw(
    module: Any,
    tensors: dict[str, torch.Tensor],
    num_samples: int,
    return_sites: Sequence[str] | None,
    return_observed: bool,
    plate: dict[str, Any],
) -> dict[str, tuple[np.ndarray, int | None]]:
    """Posterior draws of one minibatch: ``{site: (draws stacked on axis 0, plate axis)}``."""
    args, kwargs = module.get_fn_args(tensors)
    draws: dict[str, list[torch.Tensor]] = {}
    axes: dict[str, int | None] = {}
    with private_param_store():
        for _ in range(num_samples):
            guide_trace = pyro.poutine.trace(module.guide).get_trace(*args, **kwargs)
            replayed = pyro.poutine.replay(module.model, trace=guide_trace)
            model_trace = pyro.poutine.trace(replayed).get_trace(*args, **kwargs)
            for name, site in model_trace.nodes.items():
                if not _wanted(name, site, return_sites, return_observed):
                    continue
                # An observed site's recorded value is the data: draw from its likelihood.
                value = site["fn"].sample() if site["is_observed"] else site["value"]
                draws.setdefault(name, []).append(value)
                if name not in axes:
                    axes[name] = _plate_axis(name, site, plate)
    return {
        name: (torch.stack(values).cpu().numpy(), axes[name]) for name, values in draws.items()
    }


def _wanted(
    name: str, site: dict[str, Any], return_sites: Sequence[str] | None, observed: bool
) -> bool:
    if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
        return False
    if return_sites is not None:
        return name in return_sites
    return observed or not site["is_observed"]


def _plate_axis(name: str, site: dict[str, Any], plate: dict[str, Any]) -> int | None:
    """Axis of the cells in one draw of a local site; None for a global site."""
    value = site["value"]
    batch_ndim = value.dim() - site["fn"].event_dim
    for frame in site["cond_indep_stack"]:
        if frame.name == plate.get("name") and frame.dim is not None:
            return batch_ndim + frame.dim
    if name in plate.get("in", ()):
        return 0
    return None
