"""``PyroBaseModuleClass``: the contract of a cellvi module written as a Pyro model and guide."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pyro
import torch
from pyro.infer import Predictive

from cellvi.module.base._device import module_device

if TYPE_CHECKING:
    from cellvi.model.base import BaseModelClass

Tensors = dict[str, torch.Tensor]


@contextmanager
def private_param_store() -> Iterator[None]:
    """Run Pyro code against an empty parameter store, restoring the global one afterwards.

    cellvi keeps every parameter of a Pyro module on the torch module itself, so the store only
    ever holds what ``pyro.module``/``PyroModule`` register during one call. Starting each call
    from an empty store means two modules registered under the same Pyro name can never
    swap or share tensors, whatever the user's global store holds.
    """
    with pyro.get_param_store().scope():
        yield


def _in_private_store(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with private_param_store():
            return fn(*args, **kwargs)

    return wrapper


class PyroBaseModuleClass(torch.nn.Module, ABC):
    """A probabilistic model written in Pyro: a ``model``, a ``guide`` and how to call them.

    A subclass creates all its parameters in ``__init__`` (as ``nn.Parameter``, submodules or
    ``PyroParam``) and implements:

    - ``_get_fn_args_from_batch(tensors)``, a static method mapping a minibatch (a dict keyed
      by ``REGISTRY_KEYS``) to the ``(args, kwargs)`` that ``model`` and ``guide`` both take;
    - ``model(*args, **kwargs)``, the generative process, with ``obs=`` on observed sites;
    - ``guide(*args, **kwargs)``, the variational distribution of every latent site.

    :class:`cellvi.train.PyroTrainingPlan` optimises ``self.parameters()`` directly, so calling
    ``pyro.module(name, self)`` inside ``model``/``guide`` is optional (only losses such as
    ``RenyiELBO``, which backpropagate only through Pyro param sites, need it). Free-standing
    ``pyro.param`` sites are refused: they would be neither trained nor saved.

    If ``model`` and ``guide`` both accept a ``kl_weight`` keyword, the training plan passes
    the current KL warm-up weight (e.g. for ``pyro.poutine.scale`` around latent sites).
    """

    @staticmethod
    @abstractmethod
    def _get_fn_args_from_batch(tensors: Tensors) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Map a minibatch to the positional and keyword arguments of ``model`` and ``guide``."""

    @abstractmethod
    def model(self, *args: Any, **kwargs: Any) -> Any:
        """Generative process: sample latent sites and score observed ones."""

    @abstractmethod
    def guide(self, *args: Any, **kwargs: Any) -> Any:
        """Variational distribution: sample every latent site of ``model``."""

    @property
    def list_obs_plate_vars(self) -> dict[str, Any]:
        """The plate over cells and the sites inside it.

        Returns
        -------
        dict
            ``"name"``: name of the ``pyro.plate`` over cells (``""``: no such plate);
            ``"in"``: names of the local (per-cell) sites inside it; ``"sites"``: optional
            ``{site: shape}`` of those sites' event shapes. Posterior sampling concatenates
            local sites across minibatches and draws global sites once.
        """
        return {"name": "", "in": [], "sites": {}}

    @property
    def device(self) -> torch.device:
        """Device of the module's first parameter or buffer (CPU for a module without any)."""
        return module_device(self)

    def create_predictive(
        self,
        model: Callable[..., Any] | None = None,
        posterior_samples: dict[str, torch.Tensor] | None = None,
        guide: Callable[..., Any] | None = None,
        num_samples: int | None = None,
        return_sites: tuple[str, ...] | list[str] = (),
        parallel: bool = False,
    ) -> Predictive:
        """Build a ``pyro.infer.Predictive`` over this module's model and guide.

        Parameters
        ----------
        model
            Model to predict with; defaults to ``self.model``.
        posterior_samples
            Samples to condition on, instead of drawing them from ``guide``.
        guide
            Guide to draw posterior samples from; defaults to ``self.guide`` when no
            ``posterior_samples`` are given.
        num_samples
            Number of draws (required with a guide).
        return_sites
            Sites to return; ``()`` returns every site not in ``posterior_samples``.
        parallel
            Vectorise the draws (the model must support an extra leading plate).

        Notes
        -----
        The model and guide run against a private, empty parameter store on each call.
        """
        model = self.model if model is None else model
        if guide is None and posterior_samples is None:
            guide = self.guide
        return Predictive(
            _in_private_store(model),
            posterior_samples=posterior_samples,
            guide=None if guide is None else _in_private_store(guide),
            num_samples=num_samples,
            return_sites=return_sites,
            parallel=parallel,
        )

    def on_load(self, model: BaseModelClass) -> None:
        """Hook run by ``load`` before the saved weights are restored (here: nothing to do).

        A module whose parameters only appear on a first call (e.g. an AutoGuide) overrides
        it to create them, so that the saved state dict fits.
        """
