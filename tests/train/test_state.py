"""``TrainingState``: one owner of what a model knows about its training."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

import cellvi
from cellvi.model import SCVI
from cellvi.train import TrainingState

from ._train_toys import FakeSplitter, LinearVAE, fit, toy_data


def test_the_runner_records_the_fit_in_the_state() -> None:
    state, runner = fit(LinearVAE(), FakeSplitter(toy_data(20), n_val=6), max_epochs=2)
    assert state.is_trained and state.trainer is runner.trainer
    np.testing.assert_array_equal(state.train_indices, np.arange(14))
    np.testing.assert_array_equal(state.validation_indices, np.arange(14, 20))
    assert state.test_indices.size == 0
    assert list(state.history["elbo_train"].index) == [0, 1]


def test_json_round_trip_keeps_everything_but_the_trainer() -> None:
    history = {"elbo_train": pd.DataFrame({"elbo_train": [3.0, 2.5]}, index=pd.Index([0, 1]))}
    state = TrainingState(
        is_trained=True,
        history=history,
        train_indices=np.array([4, 1]),
        validation_indices=np.array([0]),
        test_indices=np.array([], dtype=np.int64),
        trainer=object(),
    )
    data = json.loads(json.dumps(state.to_json()))
    back = TrainingState.from_json(data)
    assert back.is_trained and back.trainer is None
    np.testing.assert_array_equal(back.train_indices, [4, 1])
    assert back.train_indices.dtype == np.int64 and back.test_indices.size == 0
    pd.testing.assert_frame_equal(
        back.history["elbo_train"],
        history["elbo_train"],
        check_index_type=False,
        check_names=False,
    )


def test_model_attributes_are_views_of_its_state() -> None:
    adata = cellvi.data.synthetic_iid()
    SCVI.setup_anndata(adata)
    model = SCVI(adata)
    assert model.training_state == TrainingState()
    assert not model.is_trained_ and not model.is_trained and model.history_ is None
    model.is_trained_ = True  # scvi-tools users set it by hand, e.g. after loading weights
    assert model.training_state.is_trained and model.is_trained
    model.training_state.train_indices = np.arange(3)
    np.testing.assert_array_equal(model.train_indices, np.arange(3))
    assert SCVI.is_trained_.__doc__ == "Whether the model has been trained."
