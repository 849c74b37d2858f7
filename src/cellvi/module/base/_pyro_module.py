"""``PyroBaseModuleClass``: the contract of a cellvi module written as a Pyro model and guide."""

from __future__ import annotations

import functools
import inspect
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import pyro
import torch
from pyro.infer import Predictive

from cellvi._checks import accepts_keyword
from cellvi.module.base._device import move_to_device
from cellvi.module.base._module_base import ModuleBase

Tensors = dict[str, torch.Tensor]


@contextmanager
def private_param_store(state: dict[str, Any] | None = None) -> Iterator[None]:
    """Run Pyro code against an empty parameter store, restoring the global one afterwards.

    cellvi keeps every parameter of a Pyro module on the torch module itself, so the store only
    ever holds what ``pyro.module``/``PyroModule`` register during one call. Starting each call
    from an empty store means two modules registered under the same Pyro name can never
    swap or share tensors, whatever the user's global store holds.

    ``state`` (a dict ``{"params": {}, "constraints": {}}``, updated on exit) carries one
    private store over calls instead: a training plan keeps its module's sites between
    steps, as JIT-compiled losses (``JitTrace_ELBO``), which read them before each call, need.
    """
    with pyro.get_param_store().scope(state):
        yield


def _in_private_store(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with private_param_store():
            return fn(*args, **kwargs)

    return wrapper


_MISSING_FN_ARGS = (
    "{name} must define _get_fn_args_from_batch(tensors), mapping a minibatch to the "
    "(args, kwargs) of its model and guide (a static method, or a function set in __init__)."
)


class _ChecksFnArgs(ABCMeta):
    """Refuse a Pyro module that, once built, still lacks ``_get_fn_args_from_batch``."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        module = super().__call__(*args, **kwargs)
        defined = "_get_fn_args_from_batch" in vars(module) or any(
            "_get_fn_args_from_batch" in vars(klass)
            for klass in cls.__mro__
            if klass is not PyroBaseModuleClass
        )
        if not defined:
            raise TypeError(_MISSING_FN_ARGS.format(name=cls.__name__))
        return module


class PyroBaseModuleClass(ModuleBase, metaclass=_ChecksFnArgs):
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

    ``model`` and ``guide`` move their tensor arguments to the module's device first (see
    :mod:`cellvi.module.base._device`); :meth:`get_fn_args` does the same for a minibatch.
    """

    _entry_points: ClassVar[tuple[str, ...]] = ("model", "guide")

    # Not abstract: modules written for scvi-tools often assign it in ``__init__`` (e.g. the
    # static method of their PyroModule), which an abstract method would refuse before
    # ``__init__`` runs; ``_ChecksFnArgs`` checks for it once ``__init__`` has run instead.
    def _get_fn_args_from_batch(self, tensors: Tensors) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Map a minibatch to the positional and keyword arguments of ``model`` and ``guide``."""
        raise NotImplementedError(_MISSING_FN_ARGS.format(name=type(self).__name__))

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
    def takes_kl_weight(self) -> bool:
        """Whether ``model`` (and so ``guide``) takes the KL warm-up weight as ``kl_weight``."""
        if "kl_weight" not in inspect.signature(self.model).parameters:
            return False
        if not accepts_keyword(self.guide, "kl_weight"):
            raise TypeError(
                f"{type(self).__name__}.model takes kl_weight but its guide does not; Pyro "
                "passes the same arguments to both, so add kl_weight to the guide's signature."
            )
        return True

    def get_fn_args(self, tensors: Tensors) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``_get_fn_args_from_batch`` of a minibatch moved to this module's device."""
        return self._get_fn_args_from_batch(move_to_device(tensors, self.device))

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

    def on_load(
        self, state_dict: Tensors, registry: dict[str, Any], example_batch: Tensors
    ) -> None:
        """Create the parameters ``state_dict`` holds that this module only makes when called.

        An ``AutoGuide`` (or a ``PyroModule`` sized on first use) has no parameters until the
        guide first runs. When the saved weights name parameters this fresh module lacks, the
        guide is run once on ``example_batch``, without gradients and against a private
        parameter store, so that those parameters exist before the weights are loaded. A
        model or guide with an unset ``n_obs`` (the size of its subsampled plate, which training
        sets) gets the number of registered cells first, as a training step would set it.
        """
        if not set(state_dict) - set(self.state_dict()):
            return
        n_cells = registry.get("field_registries", {}).get("X", {}).get("summary_stats", {})
        n_cells = n_cells.get("n_cells")
        for part in (self.model, self.guide):
            if n_cells is not None and getattr(part, "n_obs", 0) is None:
                part.n_obs = int(n_cells)
        self.warm_up_guide(example_batch)

    def warm_up_guide(self, tensors: Tensors) -> None:
        """Run the guide once on the minibatch ``tensors``, creating its lazy parameters.

        Runs without gradients, against a private parameter store, on the module's device.
        """
        args, kwargs = self.get_fn_args(tensors)
        if self.takes_kl_weight:
            kwargs = {**kwargs, "kl_weight": 1.0}
        with torch.no_grad(), private_param_store():
            self.guide(*args, **kwargs)
