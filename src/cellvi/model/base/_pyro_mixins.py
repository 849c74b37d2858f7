"""``PyroSampleMixin``: summaries of posterior draws of a Pyro-backed model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pyro
import torch
from anndata import AnnData

from cellvi._checks import check_positive_int
from cellvi.model._utils import parse_device_args
from cellvi.model.base._queries import posterior_query
from cellvi.module.base._pyro_module import private_param_store

logger = logging.getLogger("cellvi")

SummaryFun = Callable[..., np.ndarray]
Samples = dict[str, list[np.ndarray]]
_SAMPLE_OPTIONS = ("exclude_vars", "show_progress")


def _default_summaries() -> dict[str, SummaryFun]:
    """scvi-tools' summaries of the draws (axis 0): mean, std and the 5% and 95% quantiles."""
    return {
        "post_sample_means": np.mean,
        "post_sample_stds": np.std,
        "post_sample_q05": lambda x, axis: np.quantile(x, 0.05, axis=axis),
        "post_sample_q95": lambda x, axis: np.quantile(x, 0.95, axis=axis),
    }


def _all_draws(x: np.ndarray, axis: int) -> np.ndarray:
    return x


class PyroSampleMixin:
    """Add ``sample_posterior``: summaries of posterior draws of a Pyro module's sites."""

    @posterior_query
    @torch.no_grad()
    def sample_posterior(
        self,
        adata: AnnData | None = None,
        input_dl: Iterable[dict[str, torch.Tensor]] | None = None,
        indices: Sequence[int] | None = None,
        num_samples: int = 1000,
        return_sites: Sequence[str] | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        batch_size: int | None = None,
        return_observed: bool = False,
        return_samples: bool = False,
        summary_frequency: int | None = None,
        summary_fun: dict[str, SummaryFun] | None = None,
        **sample_kwargs: Any,
    ) -> dict[str, dict[str, np.ndarray]]:
        """Summarise ``num_samples`` posterior draws of every site, per cell for local sites.

        Each draw runs the guide, then the model replayed on the guide's latent values. Sites
        in the module's obs plate (``list_obs_plate_vars``) are drawn and summarised one
        minibatch at a time (memory holds one minibatch's draws) and concatenated along the
        plate's axis; global sites are summarised from the first minibatch's draws. A module
        declaring no obs plate is run on all cells at once.

        Parameters
        ----------
        adata
            AnnData with the training setup; None uses the training data.
        input_dl
            Minibatches to use instead of a loader over ``adata`` and ``indices``.
        indices
            Cells to use; None uses all.
        num_samples
            Posterior draws per minibatch.
        return_sites
            Sites to summarise; None means every latent site (and observed ones with
            ``return_observed``).
        accelerator, device
            Where to draw; anything but ``"auto"`` moves the model there first (as
            ``to_device``), ``"auto"`` keeps it where it is.
        batch_size
            Minibatch size (default ``cellvi.settings.batch_size``).
        return_observed
            Also summarise observed sites, as posterior predictive draws from their
            likelihood.
        return_samples
            Also return every draw, under ``"posterior_samples"`` (draws on axis 0).
        summary_frequency
            Accepted for scvi-tools' signature; cellvi summarises every minibatch as it is
            drawn, which gives the same result with the least memory.
        summary_fun
            ``{name: function(draws, axis)}`` of reductions over axis 0 (the draws); default
            scvi-tools' ``post_sample_means``, ``post_sample_stds``, ``post_sample_q05`` and
            ``post_sample_q95``.
        **sample_kwargs
            ``exclude_vars`` (sites to leave out) and ``show_progress`` (ignored: no bar).

        Returns
        -------
        dict
            ``{summary name: {site name: array}}``; a local site's arrays have the cells along
            the plate's axis, in the order of ``indices``.
        """
        unknown = set(sample_kwargs) - set(_SAMPLE_OPTIONS)
        if unknown:
            raise TypeError(
                f"sample_posterior got unknown arguments {sorted(unknown)}; valid extra "
                f"arguments: {list(_SAMPLE_OPTIONS)}."
            )
        if summary_frequency is not None:
            check_positive_int("summary_frequency", summary_frequency)
        if accelerator != "auto" or device != "auto":
            _, _, torch_device = parse_device_args(
                accelerator, device, return_device="torch", validate_single_device=True
            )
            self.to_device(torch_device)
        module = self.module
        plate = module.list_obs_plate_vars
        if input_dl is None and not plate.get("name") and not plate.get("in"):
            adata_ = self._validate_anndata(adata)
            batch_size = adata_.n_obs if indices is None else max(len(indices), 1)
        summaries = dict(_default_summaries() if summary_fun is None else summary_fun)
        if return_samples:
            summaries["posterior_samples"] = _all_draws
        excluded = set(sample_kwargs.get("exclude_vars") or ())
        local: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in summaries}
        glob: dict[str, np.ndarray] = {}
        axes: dict[str, int] = {}
        loader = input_dl
        if loader is None:
            loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        for tensors in loader:
            draws = _draw(module, tensors, num_samples, return_sites, return_observed, plate)
            for site, (values, axis) in draws.items():
                if site in excluded:
                    continue
                if axis is None:
                    glob.setdefault(site, values)
                    continue
                axes[site] = axis
                for name, fun in summaries.items():
                    local[name].setdefault(site, []).append(fun(values, axis=0))
        results: dict[str, dict[str, np.ndarray]] = {name: {} for name in summaries}
        for name, fun in summaries.items():
            # All draws keep the draw axis in front, so the cells' axis moves one along.
            shift = 1 if fun is _all_draws else 0
            for site, chunks in local[name].items():
                results[name][site] = np.concatenate(chunks, axis=axes[site] + shift)
            for site, values in glob.items():
                results[name][site] = fun(values, axis=0)
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
