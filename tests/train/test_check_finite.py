import copy

import lightning.pytorch as pl
import pytest
import torch

from cellvi.train import NonFiniteLossError, TrainingPlan

from ._train_toys import FakeSplitter, LinearVAE, NaNAtCallVAE, fit, toy_data


class _Snapshot(pl.Callback):
    """Keeps the module's weights as they were before each training batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.state = copy.deepcopy(pl_module.module.state_dict())


def test_nan_loss_raises_before_the_optimizer_step():
    module = NaNAtCallVAE(nan_at=4)  # 20 cells in batches of 8: step 4 is in epoch 1
    initial = copy.deepcopy(module.state_dict())
    snapshot = _Snapshot()
    with pytest.raises(NonFiniteLossError, match="global step 4 \\(epoch 1\\)") as info:
        fit(
            module,
            FakeSplitter(toy_data(20), n_val=0, batch_size=8),
            max_epochs=5,
            callbacks=[snapshot],
        )
    assert isinstance(info.value, FloatingPointError)
    assert (info.value.step, info.value.epoch) == (4, 1)
    assert info.value.terms == ["reconstruction_loss['gene_nll']"]
    assert "gene_nll" in str(info.value)
    assert "kl_local" not in info.value.terms
    for name, value in module.state_dict().items():
        assert torch.equal(value, snapshot.state[name]), name
        assert torch.isfinite(value).all()
    assert not torch.equal(initial["decoder.weight"], module.decoder.weight)


def test_check_finite_off_lets_nan_through():
    module = NaNAtCallVAE(nan_at=1)
    fit(module, FakeSplitter(toy_data(10)), max_epochs=1, plan_kwargs={"check_finite": False})
    assert not torch.isfinite(module.decoder.weight).all()


def test_error_without_non_finite_term():
    err = NonFiniteLossError(step=3, epoch=0, terms=[])
    assert "only the total loss" in str(err)


def test_finite_training_is_not_interrupted():
    state, _ = fit(LinearVAE(), FakeSplitter(toy_data(10)), max_epochs=2)
    assert state.is_trained


@pytest.mark.parametrize(("check_finite", "expected_readbacks"), [(False, 0), (True, 1)])
def test_training_step_readbacks(monkeypatch, check_finite, expected_readbacks):
    # A readback (item/bool/float...) blocks the host until the GPU catches up: the epoch
    # sums must stay on the device, and check_finite costs exactly one scalar per step.
    plan = TrainingPlan(LinearVAE(), check_finite=check_finite)
    batch = {"X": toy_data(8)}
    readbacks = []
    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            readbacks.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    for _ in range(3):
        plan.training_step(batch, 0)
    plan.sums("train").compute()
    assert len(readbacks) == 3 * expected_readbacks
