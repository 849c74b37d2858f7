import numpy as np
import pytest
import torch

from cellvi.train import TrainingPlan

from ._train_toys import FakeSplitter, LinearVAE, NoKLWeightVAE, PlateauModule, fit, toy_data

SPLIT_METRICS = ("elbo", "reconstruction_loss", "kl_local", "kl_global")


def _recompute_elbo(module: LinearVAE, x: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Per-cell negative ELBO over ``x``, and the naive mean of minibatch means."""
    module.eval()
    with torch.no_grad():
        _, _, out = module({"X": x})
        batch_means = []
        for batch in x.split(batch_size):
            _, _, b = module({"X": batch})
            batch_means.append((b.elbo_sum / len(batch) + b.kl_global_sum).item())
    exact = (out.elbo_sum / len(x) + out.kl_global_sum).item()
    return exact, float(np.mean(batch_means))


def test_fit_decreases_elbo_train():
    # Without warm-up the minimised loss is the ELBO itself, so the metric must fall.
    state, _ = fit(
        LinearVAE(),
        FakeSplitter(toy_data(60), batch_size=16),
        max_epochs=15,
        plan_kwargs={"lr": 2e-2, "n_epochs_kl_warmup": None},
    )
    elbo = state.history["elbo_train"]["elbo_train"]
    assert elbo.iloc[-1] < 0.6 * elbo.iloc[0]


def test_history_has_one_row_per_epoch_for_each_metric():
    state, _ = fit(LinearVAE(), FakeSplitter(toy_data(30), n_val=10), max_epochs=3)
    expected = {f"{m}_{s}" for m in SPLIT_METRICS for s in ("train", "validation")}
    expected |= {"train_loss", "validation_loss", "kl_weight"}
    assert set(state.history) == expected
    for name, table in state.history.items():
        assert list(table.columns) == [name]
        assert table.index.name == "epoch"
        assert list(table.index) == [0, 1, 2]
        assert np.isfinite(table[name]).all()


def test_training_writes_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit(LinearVAE(), FakeSplitter(toy_data(20), n_val=5), max_epochs=2)
    assert list(tmp_path.iterdir()) == []


def test_elbo_train_is_cell_weighted_over_uneven_batches():
    # lr=0 freezes the weights, so every epoch's metric equals one pass over the training set.
    x = toy_data(23)
    module = LinearVAE(stochastic=False, kl_global=True)
    state, _ = fit(
        module, FakeSplitter(x, batch_size=5, shuffle=True), max_epochs=2, plan_kwargs={"lr": 0.0}
    )
    exact, naive = _recompute_elbo(module, x, batch_size=5)
    assert not np.isclose(exact, naive, rtol=1e-3)  # the batch sizes (5, ..., 3) matter
    np.testing.assert_allclose(state.history["elbo_train"]["elbo_train"], exact, rtol=1e-5)
    rec = state.history["reconstruction_loss_train"]["reconstruction_loss_train"].iloc[-1]
    kl_local = state.history["kl_local_train"]["kl_local_train"].iloc[-1]
    kl_global = state.history["kl_global_train"]["kl_global_train"].iloc[-1]
    np.testing.assert_allclose(rec + kl_local + kl_global, exact, rtol=1e-5)
    np.testing.assert_allclose(
        kl_global, 0.5 * module.decoder.weight.pow(2).sum().item(), rtol=1e-5
    )


def test_elbo_validation_matches_final_weights():
    x = toy_data(40)
    module = LinearVAE(stochastic=False)
    state, _ = fit(
        module, FakeSplitter(x, n_val=13, batch_size=4), max_epochs=3, plan_kwargs={"lr": 1e-2}
    )
    exact, _ = _recompute_elbo(module, x[27:], batch_size=4)
    np.testing.assert_allclose(
        state.history["elbo_validation"]["elbo_validation"].iloc[-1], exact, rtol=1e-5
    )


def test_module_without_kl_weight_trains():
    state, _ = fit(NoKLWeightVAE(), FakeSplitter(toy_data(20)), max_epochs=2)
    assert state.is_trained
    assert "elbo_train" in state.history
    assert "kl_weight" not in state.history


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_builtin_optimizers_use_lr_eps_weight_decay(name):
    module = LinearVAE()
    module.encoder.bias.requires_grad_(False)
    optimizer = TrainingPlan(
        module, optimizer=name, lr=0.1, eps=0.2, weight_decay=0.3
    ).configure_optimizers()
    assert type(optimizer) is getattr(torch.optim, name)
    (group,) = optimizer.param_groups
    assert (group["lr"], group["eps"], group["weight_decay"]) == (0.1, 0.2, 0.3)
    assert len(group["params"]) == 3  # the frozen bias is left out


def test_custom_optimizer_trains():
    def creator(params):
        return torch.optim.SGD(params, lr=0.01)

    plan = TrainingPlan(LinearVAE(), optimizer="Custom", optimizer_creator=creator)
    assert type(plan.configure_optimizers()) is torch.optim.SGD
    state, _ = fit(
        LinearVAE(),
        FakeSplitter(toy_data(20)),
        max_epochs=2,
        plan_kwargs={"optimizer": "Custom", "optimizer_creator": creator},
    )
    assert state.is_trained


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "SGD"}, "Unknown optimizer"),
        ({"optimizer": "Custom"}, "optimizer_creator"),
        ({"optimizer_creator": torch.optim.SGD}, "optimizer_creator"),
        ({"min_kl_weight": 2.0}, "min_kl_weight"),
        ({"kl_weight": 0.5}, "kl_weight is set by the training plan"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainingPlan(LinearVAE(), **kwargs)


def test_reduce_lr_on_plateau_lowers_lr():
    _, runner = fit(
        PlateauModule(),
        FakeSplitter(toy_data(20), n_val=5),
        max_epochs=3,
        plan_kwargs={"reduce_lr_on_plateau": True, "lr_patience": 0, "lr_factor": 0.5},
    )
    # Epoch 0 sets the best value; epochs 1 and 2 do not improve and each halve the lr.
    assert runner.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.25e-3)


def test_reduce_lr_on_plateau_requires_validation():
    with pytest.raises(ValueError, match="reduce_lr_on_plateau monitors 'elbo_validation'"):
        fit(
            PlateauModule(),
            FakeSplitter(toy_data(20)),
            max_epochs=2,
            plan_kwargs={"reduce_lr_on_plateau": True},
        )


def test_reduce_lr_on_plateau_on_train_metric_without_validation():
    _, runner = fit(
        PlateauModule(),
        FakeSplitter(toy_data(20)),
        max_epochs=2,
        plan_kwargs={
            "reduce_lr_on_plateau": True,
            "lr_patience": 0,
            "lr_scheduler_metric": "elbo_train",
        },
    )
    assert runner.trainer.optimizers[0].param_groups[0]["lr"] < 1e-3
