import lightning.pytorch as pl
import numpy as np
import pytest

from cellvi.train import HistoryLogger, default_max_epochs

from ._train_toys import FakeSplitter, LinearVAE, PlateauModule, fit, toy_data


def test_runner_sets_model_attributes():
    splitter = FakeSplitter(toy_data(20), n_val=6)
    state, runner = fit(LinearVAE(), splitter, max_epochs=2)
    assert state.is_trained is True
    np.testing.assert_array_equal(state.train_indices, np.arange(14))
    np.testing.assert_array_equal(state.validation_indices, np.arange(14, 20))
    assert len(state.test_indices) == 0
    assert state.trainer is runner.trainer
    assert set(state.history) == set(runner.history_logger.history)
    assert not runner.training_plan.training
    assert not runner.training_plan.module.training
    assert runner.trainer.current_epoch == 2


def test_runner_trainer_defaults_and_extra_callbacks_and_loggers():
    class Counter(pl.Callback):
        epochs = 0

        def on_train_epoch_end(self, trainer, pl_module):
            self.epochs += 1

    counter, extra_logger = Counter(), HistoryLogger()
    state, runner = fit(
        LinearVAE(),
        FakeSplitter(toy_data(10)),
        max_epochs=2,
        callbacks=[counter],
        logger=extra_logger,
    )
    assert counter.epochs == 2
    assert set(extra_logger.history) == set(state.history)
    assert runner.trainer.checkpoint_callback is None
    assert runner.trainer.num_sanity_val_steps == 0


def test_early_stopping_stops_before_max_epochs():
    state, runner = fit(
        PlateauModule(),
        FakeSplitter(toy_data(20), n_val=5),
        max_epochs=20,
        early_stopping=True,
        early_stopping_patience=1,
    )
    # Epoch 0 sets the best value; epoch 1 does not improve on it, which exhausts patience 1.
    assert runner.trainer.current_epoch == 2
    assert len(state.history["elbo_validation"]) == 2


def test_early_stopping_requires_validation():
    module = LinearVAE()
    with pytest.raises(ValueError, match="Early stopping monitors 'elbo_validation'"):
        fit(module, FakeSplitter(toy_data(20)), max_epochs=5, early_stopping=True)
    assert module.kl_weights_seen == []  # raised before the first training step


def test_early_stopping_on_train_metric_without_validation():
    _, runner = fit(
        PlateauModule(),
        FakeSplitter(toy_data(20)),
        max_epochs=20,
        early_stopping=True,
        early_stopping_monitor="elbo_train",
        early_stopping_patience=1,
    )
    assert runner.trainer.current_epoch == 2


@pytest.mark.parametrize(
    ("n_cells", "expected"),
    [(1, 400), (20_000, 400), (40_000, 200), (100_000, 80), (3_000_000, 3), (10**9, 1)],
)
def test_default_max_epochs(n_cells, expected):
    assert default_max_epochs(n_cells) == expected


def test_default_max_epochs_rejects_no_cells():
    with pytest.raises(ValueError, match="positive"):
        default_max_epochs(0)
