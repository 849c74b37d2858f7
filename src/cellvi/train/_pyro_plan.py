"""Pyro training plans: stochastic variational inference of a Pyro module under Lightning."""

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


class _PyroPlan(BasePlan):
    """What both Pyro plans share: the loss of a minibatch, its logging, parameter checks.

    The model and guide run against a private Pyro parameter store of the plan's own (empty
    when the plan is built, and holding only its module's sites), so modules never share
    parameters through Pyro's global store. Parameters the guide creates on its first
    call (an ``AutoGuide``'s) join the optimizer at the first training step, or exist before
    it with :class:`~cellvi.model.base.PyroModelGuideWarmup`.
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
        max_kl_weight: float = 1.0,
        min_kl_weight: float = 1e-6,
        check_finite: bool = True,
        on_step: bool | None = False,
        on_epoch: bool | None = True,
    ) -> None:
        if scale_elbo <= 0:
            raise ValueError(f"scale_elbo must be positive, got {scale_elbo}.")
        use_kl_weight = pyro_module.takes_kl_weight
        super().__init__(
            pyro_module,
            n_steps_kl_warmup=n_steps_kl_warmup,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            max_kl_weight=max_kl_weight,
            min_kl_weight=min_kl_weight,
            check_finite=check_finite,
            logs_kl_weight=use_kl_weight,
            on_step=on_step,
            on_epoch=on_epoch,
        )
        self.use_kl_weight = use_kl_weight
        self.loss_fn = Trace_ELBO() if loss_fn is None else loss_fn
        self.optim_kwargs = dict(optim_kwargs or {})
        self.scale_elbo = scale_elbo
        self._differentiable = hasattr(self.loss_fn, "differentiable_loss")
        self._checked_parameters = False
        self._n_obs_training: int | None = None
        # Kept between steps: a JIT-compiled loss reads its param sites from the store.
        self._param_state: dict[str, Any] = {"params": {}, "constraints": {}}
        self._set_optim(optim)

    def _set_optim(self, optim: Any) -> None:
        """Check ``optim`` against what the plan's optimization accepts, and keep it."""
        raise NotImplementedError

    @property
    def n_obs_training(self) -> int | None:
        """Number of training cells; setting it sets ``n_obs`` of a model or guide that has one.

        Pyro models scale a subsampled plate by it (``pyro.plate(size=n_obs, subsample=...)``).
        The runner sets it from the data splitter before the fit.
        """
        return self._n_obs_training

    @n_obs_training.setter
    def n_obs_training(self, n_obs: int | None) -> None:
        if n_obs is not None:
            for part in (self.module.model, self.module.guide):
                if hasattr(part, "n_obs"):
                    part.n_obs = n_obs
        self._n_obs_training = n_obs

    def setup(self, stage: str) -> None:
        """Create an ``AutoGuide``'s parameters before the optimizer when there are no others.

        An optimizer needs at least one parameter: a module whose parameters are all made by
        its guide's first call runs the guide on the datamodule's first training minibatch.
        """
        if stage != "fit" or self.trainable_parameters():
            return
        datamodule = self.trainer.datamodule
        if datamodule is None:
            raise ValueError(
                f"{type(self.module).__name__} has no parameters before its guide first runs; "
                "fit it on a datamodule, or add PyroModelGuideWarmup(train_loader) to the "
                "callbacks."
            )
        self.module.warm_up_guide(next(iter(datamodule.train_dataloader())))

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

    def _training_loss(self, batch: Tensors, optimizer: Any) -> torch.Tensor:
        """The minibatch's loss with gradients attached (or computed, without
        ``differentiable_loss``), refused when not finite; checks parameters on the first step.
        """
        args, kwargs = self._fn_args(batch, self.step_kl_weight())
        model, guide = self._model_and_guide()
        with private_param_store(self._param_state):
            if self._differentiable:
                loss = self.loss_fn.differentiable_loss(model, guide, *args, **kwargs)
                self.raise_if_not_finite(loss, lambda: ["elbo"])
            else:
                # Gradients are computed here, but applied only after the check below.
                loss = torch.as_tensor(self.loss_fn.loss_and_grads(model, guide, *args, **kwargs))
                self.raise_if_not_finite(loss, lambda: ["elbo"])
            if not self._checked_parameters:
                self._check_parameters(optimizer)
        self._accumulate("train", loss, batch)
        return loss

    def validation_step(self, batch: Tensors, batch_idx: int) -> None:
        """Add a validation minibatch's loss to the epoch sums."""
        args, kwargs = self._fn_args(batch, self.kl_weight)
        model, guide = self._model_and_guide()
        with private_param_store(self._param_state):
            if self._differentiable:
                loss = self.loss_fn.differentiable_loss(model, guide, *args, **kwargs)
            else:
                loss = torch.as_tensor(self.loss_fn.loss(model, guide, *args, **kwargs))
        self._accumulate("validation", loss, batch)

    def _check_parameters(self, optimizer: torch.optim.Optimizer) -> None:
        """On the first step: refuse foreign param sites, adopt parameters made by the guide."""
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
        late = [p for p in self.trainable_parameters() if id(p) not in optimized]
        if late:
            # An AutoGuide creates its parameters on its first call, after the optimizer was
            # built; they join it before its first step, with its settings.
            optimizer.add_param_group({"params": late})
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


class PyroTrainingPlan(_PyroPlan):
    """Fit a :class:`~cellvi.module.base.PyroBaseModuleClass` by maximising its ELBO.

    Each training step evaluates ``loss_fn`` on the module's ``model`` and ``guide`` for one
    minibatch, backpropagates it into ``module.parameters()`` and takes one optimizer step
    (Lightning manual optimization, so that a non-finite loss is refused before anything is
    backpropagated). The model and guide run against the plan's private Pyro parameter store.

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
    n_steps_kl_warmup, n_epochs_kl_warmup, max_kl_weight, min_kl_weight
        The KL warm-up (see :class:`BasePlan`): by epochs if ``n_epochs_kl_warmup`` is set,
        else by steps, from ``min_kl_weight`` (1e-6: ``pyro.poutine.scale`` refuses 0) to
        ``max_kl_weight``.
    scale_elbo
        Factor on the ELBO being optimised (``pyro.poutine.scale`` on model and guide), e.g.
        to keep gradients of large datasets in range; logged metrics are unscaled.
    check_finite
        Raise :class:`NonFiniteLossError` (term ``"elbo"``) when a training loss is NaN or
        infinite, before any parameter update.
    on_step, on_epoch
        When metrics are logged (see :class:`BasePlan`).

    Notes
    -----
    Logged once per epoch: ``elbo_train`` and, with validation data, ``elbo_validation`` (the
    summed minibatch losses divided by the number of cells: the per-cell negative ELBO when
    the model does not rescale its plate), and ``kl_weight`` when the module takes it. The KL
    weight is passed as ``kl_weight=`` only when ``model`` declares that parameter; ``guide``
    must then accept it too.
    """

    def _set_optim(self, optim: Any) -> None:
        _check_optim(optim)
        self.optim = optim
        # Steps call optimizer.step() themselves: Lightning's closure would backpropagate a
        # NaN loss before the finiteness check could stop it.
        self.automatic_optimization = False

    def training_step(self, batch: Tensors, batch_idx: int) -> None:
        """One SVI step on a training minibatch, refused if its loss is not finite."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        loss = self._training_loss(batch, optimizer.optimizer)
        if self._differentiable:
            self.manual_backward(loss)
        optimizer.step()

    def make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """One torch optimizer over ``params``, from ``optim`` and ``optim_kwargs``."""
        if isinstance(self.optim, PyroOptim):
            kwargs = {**self.optim.pt_optim_args, **self.optim_kwargs}
            return self.optim.pt_optim_constructor(params, **kwargs)
        optimizer_cls = torch.optim.Adam if self.optim is None else self.optim
        return optimizer_cls(params, **{"lr": 1e-3, **self.optim_kwargs})


class LowLevelPyroTrainingPlan(_PyroPlan):
    """Fit a Pyro module with Lightning's automatic optimization and a torch optimizer.

    Each training step returns the minibatch's ``loss_fn.differentiable_loss``; Lightning
    backpropagates it and steps the optimizer, so Trainer options of automatic optimization
    (``gradient_clip_val``, ``accumulate_grad_batches``) apply. A non-finite loss is refused
    before Lightning backpropagates it. The model and guide run against the plan's private
    Pyro parameter store.

    Parameters
    ----------
    pyro_module
        The module to train.
    loss_fn
        A Pyro ELBO with ``differentiable_loss``; default ``pyro.infer.Trace_ELBO()``.
    optim
        A torch optimizer class; default ``torch.optim.Adam``.
    optim_kwargs
        Its arguments; the learning rate defaults to 1e-3.
    n_steps_kl_warmup, n_epochs_kl_warmup, max_kl_weight, min_kl_weight
        The KL warm-up, as in :class:`PyroTrainingPlan`.
    scale_elbo
        Factor on the optimised ELBO (``pyro.poutine.scale``); logged metrics are unscaled.
    check_finite
        Raise :class:`NonFiniteLossError` when a training loss is NaN or infinite.
    on_step, on_epoch
        When metrics are logged (see :class:`BasePlan`).
    """

    def _set_optim(self, optim: Any) -> None:
        if optim is not None and not (
            isinstance(optim, type) and issubclass(optim, torch.optim.Optimizer)
        ):
            raise TypeError(f"optim must be None or a torch.optim.Optimizer class, got {optim!r}.")
        if not self._differentiable:
            raise ValueError(
                f"{type(self.loss_fn).__name__} has no differentiable_loss, which Lightning's "
                "automatic optimization needs; use PyroTrainingPlan for it."
            )
        self.optim = torch.optim.Adam if optim is None else optim

    def training_step(self, batch: Tensors, batch_idx: int) -> torch.Tensor:
        """The loss of a training minibatch, for Lightning to backpropagate and step."""
        return self._training_loss(batch, self.optimizers().optimizer)

    def make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The torch optimizer ``optim`` over ``params``."""
        return self.optim(params, **{"lr": 1e-3, **self.optim_kwargs})


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
