"""``UnsupervisedTrainingMixin``: the ``train`` method of unsupervised models."""

from __future__ import annotations

from typing import Any

from cellvi.dataloaders import DataSplitter
from cellvi.train import TrainingPlan, TrainRunner, default_max_epochs


class UnsupervisedTrainingMixin:
    """Add ``train``: split the data, build a training plan, and run Lightning.

    A model class may swap the pieces through ``_data_splitter_cls``, ``_training_plan_cls``
    and ``_train_runner_cls``.
    """

    _data_splitter_cls = DataSplitter
    _training_plan_cls = TrainingPlan
    _train_runner_cls = TrainRunner

    def train(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        train_size: float = 0.9,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        load_sparse_tensor: bool = False,
        batch_size: int = 128,
        early_stopping: bool = False,
        device_resident: bool | str = "auto",
        datasplitter_kwargs: dict[str, Any] | None = None,
        plan_kwargs: dict[str, Any] | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Train the model.

        Parameters
        ----------
        max_epochs
            Passes through the training data; default ``min(round(20_000 / n_cells * 400), 400)``.
        accelerator, devices
            Where to train (Lightning's names; "auto" picks a GPU when there is one).
        train_size, validation_size
            Fractions of cells for training and validation; the rest is the test set.
        shuffle_set_split
            Shuffle cells before splitting (else the split follows the cell order).
        load_sparse_tensor
            Give the module sparse count tensors instead of dense ones.
        batch_size
            Minibatch size.
        early_stopping
            Stop when the validation ELBO stops improving (see ``early_stopping_*`` trainer
            kwargs).
        device_resident
            Hold the registered data on the training device and gather minibatches there;
            ``"auto"`` does when they fit (see ``DataSplitter``), ``False`` copies each
            minibatch from the host.
        datasplitter_kwargs
            More ``DataSplitter`` arguments, e.g. ``external_indexing=[train, valid, test]``.
        plan_kwargs
            ``TrainingPlan`` arguments (lr, weight_decay, n_epochs_kl_warmup, ...).
        **trainer_kwargs
            Lightning ``Trainer`` and ``TrainRunner`` arguments.
        """
        return run_training(
            self,
            max_epochs,
            splitter_kwargs={
                "train_size": train_size,
                "validation_size": validation_size,
                "shuffle_set_split": shuffle_set_split,
                "load_sparse_tensor": load_sparse_tensor,
                "batch_size": batch_size,
                "device_resident": device_resident,
                **(datasplitter_kwargs or {}),
            },
            plan_kwargs=plan_kwargs or {},
            accelerator=accelerator,
            devices=devices,
            early_stopping=early_stopping,
            **trainer_kwargs,
        )


def run_training(
    model: Any,
    max_epochs: int | None,
    splitter_kwargs: dict[str, Any],
    plan_kwargs: dict[str, Any],
    **runner_kwargs: Any,
) -> None:
    """Split the data, build the training plan and run Lightning: what every ``train`` shares.

    The pieces are the model class's ``_data_splitter_cls``, ``_training_plan_cls`` and
    ``_train_runner_cls``.
    """
    if max_epochs is None:
        max_epochs = default_max_epochs(model.adata.n_obs)
    # Another model's setup of the same AnnData may have rewritten the codes since this
    # model's registration: replay it so training reads this model's codes.
    model._validate_anndata()
    data_splitter = model._data_splitter_cls(model.adata_manager, **splitter_kwargs)
    training_plan = model._training_plan_cls(model.module, **plan_kwargs)
    runner = model._train_runner_cls(
        model,
        training_plan=training_plan,
        data_splitter=data_splitter,
        max_epochs=max_epochs,
        **runner_kwargs,
    )
    runner()
