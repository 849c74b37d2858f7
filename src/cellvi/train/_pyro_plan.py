"""``PyroTrainingPlan``: stochastic variational inference of a Pyro module under Lightning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyro
import torch
from pyro.infer import ELBO, Trace_ELBO
from pyro.optim import PyroOptim
from pyro.optim.lr_scheduler import PyroLRScheduler

from cellvi.module.base._pyro_module import private_param_store
from cellvi.train._base_plan import BasePlan

if TYPE_CHECKING:
    from cellvi.module.base import PyroBaseModuleClass

Tensors = dict[str, torch.Tensor]


class PyroTrainingPlan(BasePlan):
    """Fit a :class:`~cellvi.module.base.PyroBaseModuleClass` by maximising its ELBO.

    Each training step evaluates ``loss_fn`` on the module's ``model`` and ``guide`` for one
    minibatch, backpropagates it into ``module.parameters()`` and takes one optimizer step
    (Lightning manual optimization). The model and guide run against a private, empty Pyro
    parameter store, so modules never share parameters through Pyro's global store.

    Parameters
    ----------
    pyro_module
        The module to train.
    loss_fn
        A Pyro ELBO; default ``pyro.infer.Trace_ELBO()``. Losses without
        ``differentiable_loss`` (``TraceGraph_ELBO``, ``RenyiELBO``) compute gradients with
        ``loss_and_grads``; some (``RenyiELBO``) only backpropagate when the trace holds Pyro
        param sites, so their module must call ``pyro.module(name, self)`` in model and guide.
    optim
        ``None`` (``torch.optim.Adam``), a torch optimizer class, or a ``pyro.optim``
        optimizer such as ``pyro.optim.Adam({"lr": 1e-3})`` (its torch class and dict of
        arguments are used for one optimizer over all parameters).
    optim_kwargs
        Optimizer arguments, over those of a ``pyro.optim`` optimizer; the learning rate
        defaults to 1e-3.
    n_steps_kl_warmup
        Optimizer steps over which the KL weight rises from 0 to 1; takes precedence.
    n_epochs_kl_warmup
        Epochs over which the KL weight rises (``None`` for both: always 1).
    scale_elbo
        Factor on the ELBO being optimised (``pyro.poutine.scale`` on model and guide), e.g.
        to keep gradients of large datasets in range; logged metrics are unscaled.
    check_finite
        Raise :class:`NonFiniteLossError` (term ``"elbo"``) when a training loss is NaN or
        infinite, before any parameter update.

    Notes
    -----
    Logged once per epoch: ``elbo_train`` and, with validation data, ``elbo_validation`` (the
    summed minibatch losses divided by the number of cells: the per-cell negative ELBO when
    the model does not rescale its plate), and ``kl_weight`` when the module takes it. The KL
    weight is passed as ``kl_weight=`` only when ``model`` declares that parameter; ``guide``
    must then accept it too. It starts at 0, which ``pyro.poutine.scale`` refuses: clamp it
    (e.g. ``max(kl_weight, 1e-3)``) before scaling sites with it.
    """

    def __init__(
        self,
        pyro_module: PyroBaseModuleClass,
        loss_fn: ELBO | None = None,
        optim: PyroOptim | type[torch.optim.Optimizer] | None = None,
        optim_kwargs: dict[str, Any] | None = None,
        n_steps_kl_warmup: int | None = None,
        n_epochs_kl_warmup: int | None = 400,
        scale_elbo: float = 1.0,
        check_finite: bool = True,
    ) -> None:
        _check_optim(optim)
        if scale_elbo <= 0:
            raise ValueError(f"scale_elbo must be positive, got {scale_elbo}.")
        use_kl_weight = pyro_module.takes_kl_weight
        super().__init__(
            pyro_module,
            n_steps_kl_warmup=n_steps_kl_warmup,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            check_finite=check_finite,
            logs_kl_weight=use_kl_weight,
        )
        self.use_kl_weight = use_kl_weight
        self.loss_fn = Trace_ELBO() if loss_fn is None else loss_fn
        self.optim = optim
        self.optim_kwargs = dict(optim_kwargs or {})
        self.scale_elbo = scale_elbo
        self._differentiable = hasattr(self.loss_fn, "differentiable_loss")
        # Steps call optimizer.step() themselves: Lightning's closure would backpropagate a
        # NaN loss before the finiteness check could stop it.
        self.automatic_optimization = False
        self._checked_parameters = False

    def _fn_args(self, batch: Tensors, kl_weight: float) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = self.module.get_fn_args(batch)
        if self.use_kl_weight:
            kwargs = {**kwargs, "kl_weight": kl_weight}
        return args, kwargs

    def _model_and_guide(self) -> tuple[Any, Any]:
        if self.scale_elbo == 1.0:
            return self.module.model, self.module.guide
        scale = pyro.poutine.scale
        return scale(self.module.model, self.scale_elbo), scale(self.module.guide, self.scale_elbo)

    def training_step(self, batch: Tensors, batch_idx: int) -> None:
        """One SVI step on a training minibatch, refused if its loss is not finite."""
        args, kwargs = self._fn_args(batch, self.step_kl_weight())
        optimizer = self.optimizers()
        optimizer.zero_grad()
        model, guide = self._model_and_guide()
        with private_param_store():
            if self._differentiable:
                loss = self.loss_fn.differentiable_loss(model, guide, *args, **kwargs)
                self.raise_if_not_finite(loss, lambda: ["elbo"])
                self.manual_backward(loss)
            else:
                # Gradients are computed here, but applied only after the check below.
                loss = torch.as_tensor(self.loss_fn.loss_and_grads(model, guide, *args, **kwargs))
                self.raise_if_not_finite(loss, lambda: ["elbo"])
            if not self._checked_parameters:
                self._check_parameters(optimizer)
        optimizer.step()
        self._accumulate("train", loss, batch)

    def validation_step(self, batch: Tensors, batch_idx: int) -> None:
        """Add a validation minibatch's loss to the epoch sums."""
        args, kwargs = self._fn_args(batch, self.kl_weight)
        model, guide = self._model_and_guide()
        with private_param_store():
            if self._differentiable:
                loss = self.loss_fn.differentiable_loss(model, guide, *args, **kwargs)
            else:
                loss = torch.as_tensor(self.loss_fn.loss(model, guide, *args, **kwargs))
        self._accumulate("validation", loss, batch)

    def _check_parameters(self, optimizer: Any) -> None:
        """Fail on parameters the optimizer would never update (checked on the first step)."""
        own = {id(p) for p in self.module.parameters()}
        store = pyro.get_param_store()
        foreign = [name for name, p in store.named_parameters() if id(p) not in own]
        if foreign:
            raise RuntimeError(
                f"pyro.param sites {foreign} are not parameters of {type(self.module).__name__}: "
                "they would be neither trained nor saved. Create them in __init__ as "
                "torch.nn.Parameter (or PyroParam of a PyroModule)."
            )
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        late = [
            name
            for name, p in self.module.named_parameters()
            if p.requires_grad and id(p) not in optimized
        ]
        if late:
            raise RuntimeError(
                f"Parameters {late} of {type(self.module).__name__} were created after the "
                "optimizer; create every parameter in __init__."
            )
        if not self._differentiable and all(p.grad is None for p in self.module.parameters()):
            raise RuntimeError(
                f"{type(self.loss_fn).__name__} computed no gradient: it backpropagates only "
                "when the trace holds Pyro param sites, so call pyro.module(name, self) in the "
                "module's model and guide."
            )
        self._checked_parameters = True

    def _accumulate(self, split: str, loss: torch.Tensor, batch: Tensors) -> None:
        # Unscaled, so the logged ELBO is the model's whatever ``scale_elbo`` is.
        self.sums(split).update(_n_cells(batch), {"elbo": loss / self.scale_elbo})

    def make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """One torch optimizer over ``params``, from ``optim`` and ``optim_kwargs``."""
        if isinstance(self.optim, PyroOptim):
            kwargs = {**self.optim.pt_optim_args, **self.optim_kwargs}
            return self.optim.pt_optim_constructor(params, **kwargs)
        optimizer_cls = torch.optim.Adam if self.optim is None else self.optim
        return optimizer_cls(params, **{"lr": 1e-3, **self.optim_kwargs})


def _check_optim(optim: Any) -> None:
    if optim is None or (isinstance(optim, type) and issubclass(optim, torch.optim.Optimizer)):
        return
    if not isinstance(optim, PyroOptim) or isinstance(optim, PyroLRScheduler):
        raise TypeError(
            f"optim must be None, a torch.optim.Optimizer class or a pyro.optim optimizer, got "
            f"{optim!r}."
        )
    if not isinstance(optim.pt_optim_args, dict) or optim.pt_clip_args:
        raise ValueError(
            "A pyro.optim optimizer needs a dict of arguments and no clip_args here: cellvi "
            "builds one torch optimizer over all parameters, with the same arguments for each."
        )


def _n_cells(batch: Tensors) -> int:
    return int(next(iter(batch.values())).shape[0])
