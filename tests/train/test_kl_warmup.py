import pytest

from cellvi.train import TrainingPlan
from cellvi.train._kl_weight import compute_kl_weight

from ._train_toys import FakeSplitter, LinearVAE, fit, toy_data


@pytest.mark.parametrize(
    ("epoch", "step", "n_epochs", "n_steps", "expected"),
    [
        (0, 0, 4, None, 0.5),
        (2, 99, 4, None, 0.75),
        (9, 0, 4, None, 1.0),
        (3, 5, 4, 10, 0.875),  # epochs take precedence over steps
        (5, 5, 4, 10, 1.0),  # ... also once their warm-up is over
        (0, 5, None, 10, 0.75),
        (0, 20, None, 10, 1.0),
        (7, 7, None, None, 1.0),
    ],
)
def test_compute_kl_weight(epoch, step, n_epochs, n_steps, expected):
    assert compute_kl_weight(epoch, step, n_epochs, n_steps, 1.0, 0.5) == pytest.approx(expected)


def test_min_above_max_is_refused():
    with pytest.raises(ValueError, match="must not exceed"):
        compute_kl_weight(0, 0, 4, None, 0.5, 1.0)


def test_steps_with_the_default_epoch_warmup_warn_that_they_are_ignored():
    with pytest.warns(UserWarning, match="n_steps_kl_warmup=5 is ignored"):
        plan = TrainingPlan(LinearVAE(), n_steps_kl_warmup=5)
    assert plan.n_epochs_kl_warmup == 400


def test_kl_weight_property_before_training():
    assert TrainingPlan(LinearVAE(), min_kl_weight=0.1).kl_weight == pytest.approx(0.1)
    assert TrainingPlan(LinearVAE(), n_epochs_kl_warmup=None, max_kl_weight=0.7).kl_weight == 0.7


def test_warmup_by_epochs():
    module = LinearVAE()  # 10 cells in batches of 5: two steps per epoch
    state, _ = fit(
        module, FakeSplitter(toy_data(10)), max_epochs=6, plan_kwargs={"n_epochs_kl_warmup": 4}
    )
    expected = [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert module.kl_weights_seen == pytest.approx([w for w in expected for _ in range(2)])
    assert list(state.history["kl_weight"]["kl_weight"]) == pytest.approx(expected)


def test_warmup_by_steps():
    module = LinearVAE()
    state, _ = fit(
        module,
        FakeSplitter(toy_data(10)),
        max_epochs=4,
        plan_kwargs={
            "n_steps_kl_warmup": 5,
            "n_epochs_kl_warmup": None,
            "min_kl_weight": 0.5,
            "max_kl_weight": 1.5,
        },
    )
    assert module.kl_weights_seen == pytest.approx([0.5, 0.7, 0.9, 1.1, 1.3, 1.5, 1.5, 1.5])
    # The logged weight is that of each epoch's last step.
    assert list(state.history["kl_weight"]["kl_weight"]) == pytest.approx([0.7, 1.1, 1.5, 1.5])


# scvi-tools' name and precedence (``scvi.train._trainingplans._compute_kl_weight``) -----------


def test_scvi_tools_name_is_the_same_function_with_its_defaults():
    from cellvi.train._trainingplans import _compute_kl_weight

    assert _compute_kl_weight is compute_kl_weight
    # max_kl_weight=1.0, min_kl_weight=0.0 by default, as in scvi-tools.
    assert _compute_kl_weight(1, 0, 4, None) == pytest.approx(0.25)
    assert _compute_kl_weight(0, 3, None, 4) == pytest.approx(0.75)
    assert _compute_kl_weight(0, 0, None, None) == 1.0


@pytest.mark.parametrize(
    ("epoch", "step", "n_epochs", "n_steps", "expected"),
    [
        (1, 900, 2, 1000, 0.2 + 0.6 * 0.5),  # epochs win, though steps would be near the end
        (2, 0, 2, 1000, 0.8),  # epoch warm-up over: max, whatever the steps say
        (0, 500, None, 1000, 0.2 + 0.6 * 0.5),  # steps only when epochs is None
        (0, 500, 0, 1000, 0.2 + 0.6 * 0.5),  # ... or 0, as scvi-tools' truthiness test
        (0, 1000, None, 1000, 0.8),
        (0, 0, 2, None, 0.2),  # the warm-up starts at min_kl_weight
        (0, 0, None, 0, 0.8),  # neither: max_kl_weight
    ],
)
def test_precedence_and_bounds(epoch, step, n_epochs, n_steps, expected):
    from cellvi.train._trainingplans import _compute_kl_weight

    weight = _compute_kl_weight(epoch, step, n_epochs, n_steps, 0.8, 0.2)
    assert weight == pytest.approx(expected)
    assert 0.2 <= weight <= 0.8


def test_min_equal_to_max_is_a_constant_weight():
    for epoch in range(4):
        assert compute_kl_weight(epoch, 0, 3, None, 0.5, 0.5) == 0.5


def test_explicit_epochs_and_steps_warn_and_steps_alone_do_not(recwarn):
    with pytest.warns(UserWarning, match="n_epochs_kl_warmup=3 takes precedence"):
        TrainingPlan(LinearVAE(), n_epochs_kl_warmup=3, n_steps_kl_warmup=7)
    TrainingPlan(LinearVAE(), n_epochs_kl_warmup=None, n_steps_kl_warmup=7)
    TrainingPlan(LinearVAE(), n_epochs_kl_warmup=3)
    assert not [w for w in recwarn if "kl_warmup" in str(w.message)]


def test_pyro_plan_warns_too():
    from cellvi.train import PyroTrainingPlan

    from ..model._user_modules import TinyPyroVAE

    with pytest.warns(UserWarning, match="n_steps_kl_warmup=5 is ignored"):
        PyroTrainingPlan(TinyPyroVAE(n_input=5), n_steps_kl_warmup=5)


def test_epochs_win_over_steps_in_a_fit():
    module = LinearVAE()  # two steps an epoch
    with pytest.warns(UserWarning, match="is ignored"):
        state, _ = fit(
            module,
            FakeSplitter(toy_data(10)),
            max_epochs=3,
            plan_kwargs={"n_epochs_kl_warmup": 2, "n_steps_kl_warmup": 100},
        )
    assert module.kl_weights_seen == pytest.approx([0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
