"""``UnsupervisedTrainingMixin``: the ``train`` method of unsupervised models."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import lightning.pytorch as pl

from cellvi._checks import accepts_any_keyword, check_keywords, check_positive_int
from cellvi.dataloaders import DataSplitter
from cellvi.model.base._checkpoints import CheckpointMixin
from cellvi.train import PyroTrainingPlan, TrainingPlan, TrainRunner, default_max_epochs
from cellvi.train._config import KwargsLike, merge_kwargs


class TrainingMixin(CheckpointMixin):
    """``train``: split the data, build a training plan, and fit it with Lightning.

    The pieces are class attributes a model may swap: ``_data_splitter_cls``,
    ``_training_plan_cls`` and ``_train_runner_cls``. :class:`UnsupervisedTrainingMixin`
    (torch modules) and :class:`PyroSviTrainMixin` (Pyro modules) differ only in the plan and
    in where ``lr`` goes.
    """

    _data_splitter_cls = DataSplitter
    _training_plan_cls: type = TrainingPlan
    _train_runner_cls = TrainRunner

    def train(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        load_sparse_tensor: bool = False,
        batch_size: int = 128,
        early_stopping: bool = False,
        device_resident: bool | str = "auto",
        lr: float | None = None,
        datasplitter_kwargs: dict[str, Any] | None = None,
        plan_config: KwargsLike | None = None,
        plan_kwargs: KwargsLike | None = None,
        datamodule: pl.LightningDataModule | None = None,
        trainer_config: KwargsLike | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Train the model.

        Parameters
        ----------
        max_epochs
            Passes through the training data; default ``min(round(20_000 / n_cells * 400), 400)``
            (``n_cells`` of ``datamodule.n_obs`` with a datamodule).
        accelerator, devices
            Where to train (Lightning's names; "auto" picks a GPU when there is one).
        train_size, validation_size
            Fractions of cells for training and validation; the rest is the test set. None
            for ``train_size``: 0.9, moving the one or two cells of a last training minibatch
            that would hold so few to the validation set (a chosen size keeps them).
        shuffle_set_split
            Shuffle cells before splitting (else the split follows the cell order).
        load_sparse_tensor
            Give the module sparse count tensors instead of dense ones.
        batch_size
            Minibatch size.
        early_stopping
            Stop when the validation ELBO stops improving (see the ``early_stopping_*``
            arguments of :class:`~cellvi.train.Trainer`).
        device_resident
            Hold the registered data on the training device and gather minibatches there;
            ``"auto"`` does when they fit (see ``DataSplitter``), ``False`` copies each
            minibatch from the host.
        lr
            Learning rate; overrides the one in ``plan_kwargs``.
        datasplitter_kwargs
            More ``DataSplitter`` arguments, e.g. ``external_indexing=[train, valid, test]``.
        plan_config
            A :class:`~cellvi.train.TrainingPlanConfig` (or mapping) of plan arguments, under
            ``plan_kwargs`` (which win).
        plan_kwargs
            Training plan arguments (``TrainingPlan``: lr, weight_decay, n_epochs_kl_warmup,
            on_step, ...; ``PyroTrainingPlan``: loss_fn, optim, optim_kwargs, ...).
        datamodule
            A ``LightningDataModule`` to train on instead of a ``DataSplitter`` of the model's
            AnnData; its minibatches must be what the module reads (a dict keyed by
            ``REGISTRY_KEYS``). The splitter arguments above do not apply to it.
        trainer_config
            A :class:`~cellvi.train.TrainerConfig` (or mapping) of trainer arguments, under
            ``**trainer_kwargs`` (which win).
        **trainer_kwargs
            :class:`~cellvi.train.Trainer` arguments (``check_val_every_n_epoch``,
            ``early_stopping_patience``, ``callbacks``, ``log_every_n_steps``,
            ``learning_rate_monitor``, ...) and ``ckpt_path``, a Lightning checkpoint to
            resume from. ``strategy="ddp"`` (with ``devices`` and ``num_nodes``) trains on
            several processes, each on its share of the cells (see ``docs/scaling.md``).

        Every option is checked before training starts: a name that the splitter, the plan or
        the trainer does not take fails at once, listing the valid names. Validation runs only
        when asked (``check_val_every_n_epoch``) or needed (early stopping, checkpoints, the
        learning-rate monitor). A second ``train`` continues the model's history.
        """
        plan_kwargs = merge_kwargs(plan_config, plan_kwargs, name="plan")
        if lr is not None:
            plan_kwargs = self._with_learning_rate(plan_kwargs, lr)
        splitter_kwargs = {
            "train_size": train_size,
            "validation_size": validation_size,
            "shuffle_set_split": shuffle_set_split,
            "load_sparse_tensor": load_sparse_tensor,
            "batch_size": batch_size,
            "device_resident": device_resident,
        }
        trainer_kwargs.update(accelerator=accelerator, devices=devices)
        run_training(
            self,
            max_epochs,
            splitter_kwargs,
            plan_kwargs,
            datamodule,
            datasplitter_kwargs,
            early_stopping=early_stopping,
            trainer_config=trainer_config,
            **trainer_kwargs,
        )

    def _with_learning_rate(self, plan_kwargs: dict[str, Any], lr: float) -> dict[str, Any]:
        """``plan_kwargs`` with the learning rate set where the plan reads it."""
        return {**plan_kwargs, "lr": lr}


class UnsupervisedTrainingMixin(TrainingMixin):
    """Add ``train`` to a model whose module is a ``BaseModuleClass`` (``TrainingPlan``)."""


class PyroSviTrainMixin(TrainingMixin):
    """Add ``train`` to a model whose module is a ``PyroBaseModuleClass``.

    Training is stochastic variational inference by :class:`PyroTrainingPlan`; ``lr`` goes to
    its optimizer's arguments. Parameters an ``AutoGuide`` creates on its first call join the
    optimizer at the first training step.
    """

    _training_plan_cls = PyroTrainingPlan

    def _with_learning_rate(self, plan_kwargs: dict[str, Any], lr: float) -> dict[str, Any]:
        optim_kwargs = {**(plan_kwargs.get("optim_kwargs") or {}), "lr": lr}
        return {**plan_kwargs, "optim_kwargs": optim_kwargs}


def run_training(
    model: Any,
    max_epochs: int | None,
    splitter_kwargs: dict[str, Any],
    plan_kwargs: dict[str, Any],
    datamodule: pl.LightningDataModule | None = None,
    datasplitter_kwargs: dict[str, Any] | None = None,
    **runner_kwargs: Any,
) -> None:
    """Split the data, build the training plan and run Lightning: what every ``train`` shares.

    The pieces are the model class's ``_data_splitter_cls``, ``_training_plan_cls`` and
    ``_train_runner_cls``; ``datamodule``, when given, replaces the splitter, so the user's
    ``datasplitter_kwargs`` (over ``splitter_kwargs``) are refused with it. A fit that fails
    (a non-finite loss, an error, a second Ctrl+C) leaves the model exactly as it was before
    this call: weights, buffers such as the batch norm statistics, training state, mode and
    device.
    """
    if datamodule is not None and datasplitter_kwargs:
        raise ValueError(
            f"datasplitter_kwargs configure the {model._data_splitter_cls.__name__}, which a "
            "datamodule replaces; pass them to your datamodule instead."
        )
    splitter_kwargs = {**splitter_kwargs, **(datasplitter_kwargs or {})}
    plan_cls = model._training_plan_cls
    if not accepts_any_keyword(plan_cls.__init__):
        # Plans that take **kwargs check them themselves (TrainingPlan: against the loss).
        named = list(inspect.signature(plan_cls.__init__).parameters)[2:]
        check_keywords(plan_kwargs, named, "plan_kwargs")
    if datamodule is None and model._adata is None:
        raise AttributeError(
            f"This {type(model).__name__} holds no AnnData to train on; pass "
            "train(datamodule=...)."
        )
    if max_epochs is None:
        max_epochs = default_max_epochs(_n_cells(model, datamodule))
    check_positive_int("max_epochs", max_epochs)
    if model.module is None:
        model.module = _module_from_datamodule(model, datamodule)
    if datamodule is None:
        # Another model's setup of the same AnnData may have rewritten the codes since this
        # model's registration: replay it so training reads this model's codes.
        model._validate_anndata()
        datamodule = model._data_splitter_cls(model.adata_manager, **splitter_kwargs)
    training_plan = model._training_plan_cls(model.module, **plan_kwargs)
    runner = model._train_runner_cls(
        model,
        training_plan=training_plan,
        data_splitter=datamodule,
        max_epochs=max_epochs,
        **runner_kwargs,
    )
    before = _ModelSnapshot(model)
    try:
        runner()
    except BaseException:
        before.restore(model)
        raise


def _module_from_datamodule(model: Any, datamodule: pl.LightningDataModule) -> Any:
    """The module of a model created without data, sized by the datamodule's attributes.

    The datamodule must say ``n_vars`` and ``n_batch``; ``n_labels`` (default 1),
    ``n_continuous_cov`` (0) and ``n_cats_per_cov`` (None) are read when present.
    """
    missing = [name for name in ("n_vars", "n_batch") if not hasattr(datamodule, name)]
    if missing:
        raise ValueError(
            f"{type(model).__name__} builds its module from the datamodule, which lacks "
            f"{missing}; set them on the datamodule (e.g. datamodule.n_vars = adata.n_vars)."
        )
    return model._module_cls(
        datamodule.n_vars,
        n_batch=datamodule.n_batch,
        n_labels=getattr(datamodule, "n_labels", 1),
        n_continuous_cov=getattr(datamodule, "n_continuous_cov", 0),
        n_cats_per_cov=getattr(datamodule, "n_cats_per_cov", None),
        **model._module_kwargs,
    )


def _n_cells(model: Any, datamodule: pl.LightningDataModule | None) -> int:
    if datamodule is None:
        return model.adata.n_obs
    if not hasattr(datamodule, "n_obs"):
        raise ValueError(
            "The datamodule has no n_obs attribute to choose the number of epochs from; pass "
            "max_epochs."
        )
    return int(datamodule.n_obs)


class _ModelSnapshot:
    """What a fit changes on a model, copied so a failed fit can be undone."""

    def __init__(self, model: Any) -> None:
        module = model.module
        self.weights = {
            name: value.detach().clone() for name, value in module.state_dict().items()
        }
        self.training = module.training
        self.device = module.device
        self.state = dataclasses.replace(model.training_state)

    def restore(self, model: Any) -> None:
        module = model.module
        module.to(self.device)
        # strict=False: a failed first fit may have created parameters lazily (a Pyro guide).
        module.load_state_dict(self.weights, strict=False)
        module.train(self.training)
        model.training_state = self.state
