"""The module contract: forward's order, LossOutput, auto_move_data."""

from __future__ import annotations

import pytest
import torch

from cellvi.module.base import BaseModuleClass, LossOutput, auto_move_data


class Recorder(BaseModuleClass):
    """A module that records the order of the contract's calls."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.calls: list[str] = []

    def _get_inference_input(self, tensors, **kwargs):
        self.calls.append("get_inference_input")
        return {"x": tensors["X"]}

    @auto_move_data
    def inference(self, x, scale: float = 1.0):
        self.calls.append("inference")
        return {"z": x * self.weight * scale}

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        self.calls.append("get_generative_input")
        return {"z": inference_outputs["z"]}

    def generative(self, z):
        self.calls.append("generative")
        return {"mean": z + 1}

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0):
        self.calls.append("loss")
        per_cell = (generative_outputs["mean"] - tensors["X"]).square().sum(-1)
        return LossOutput(
            loss=per_cell.mean(), reconstruction_loss=per_cell, kl_local=kl_weight * per_cell
        )


def test_forward_runs_inference_then_generative_then_loss() -> None:
    module = Recorder()
    tensors = {"X": torch.randn(5, 3)}
    inference_outputs, generative_outputs, losses = module(
        tensors, inference_kwargs={"scale": 2.0}, loss_kwargs={"kl_weight": 0.5}
    )
    assert module.calls == [
        "get_inference_input",
        "inference",
        "get_generative_input",
        "generative",
        "loss",
    ]
    torch.testing.assert_close(inference_outputs["z"], 2 * tensors["X"])
    torch.testing.assert_close(losses.kl_local_sum, 0.5 * losses.reconstruction_loss_sum)
    module.calls.clear()
    assert len(module(tensors, compute_loss=False)) == 2
    assert "loss" not in module.calls


def test_missing_methods_fail_at_instantiation_naming_them() -> None:
    class Incomplete(BaseModuleClass):
        def _get_inference_input(self, tensors, **kwargs):
            return {}

        def inference(self):
            return {}

    with pytest.raises(TypeError, match="_get_generative_input|generative|loss"):
        Incomplete()


def test_sample_is_optional_but_says_so() -> None:
    with pytest.raises(NotImplementedError, match="Recorder does not implement sample"):
        Recorder().sample()


def test_loss_output_normalises_terms_and_sums() -> None:
    per_cell = torch.tensor([1.0, 2.0, 3.0])
    output = LossOutput(
        loss=per_cell.mean(),
        reconstruction_loss=per_cell,
        kl_local={"a": per_cell, "b": 2 * per_cell},
        kl_global=torch.tensor(4.0),
    )
    assert output.n_obs_minibatch == 3
    assert output.reconstruction_loss_sum.item() == 6.0
    assert output.kl_local_sum.item() == 18.0
    assert output.kl_global_sum.item() == 4.0
    assert output.elbo_sum.item() == 24.0
    empty = LossOutput(loss=torch.tensor(1.0), reconstruction_loss=per_cell)
    assert empty.kl_local_sum.item() == 0.0 and empty.kl_global_sum.item() == 0.0
    with pytest.raises(ValueError, match="scalar"):
        LossOutput(loss=per_cell)


def test_auto_move_data_moves_nested_tensors_to_the_module_device() -> None:
    module = Recorder().to(torch.float64).to("meta")
    seen = {}

    class Probe(Recorder):
        @auto_move_data
        def inference(self, x, extra=None):
            seen["x"], seen["extra"] = x.device, extra["t"].device
            return {"z": x}

    probe = Probe().to("meta")
    probe.inference(torch.ones(2), extra={"t": torch.ones(1)})
    assert seen == {"x": torch.device("meta"), "extra": torch.device("meta")}
    assert module.device == torch.device("meta")
