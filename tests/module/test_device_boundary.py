"""Every public entry point of a module moves its tensor inputs to the module's device.

The module here lives on PyTorch's ``meta`` device (shapes without storage), so a CPU-only
machine can still tell whether CPU tensors were moved before a method saw them.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch

from cellvi.module import VAE, VAEC
from cellvi.module.base import BaseModuleClass, LossOutput, PyroBaseModuleClass, move_to_device

META = torch.device("meta")


class Recorder(BaseModuleClass):
    """A user module without any decorator; it records the device of what it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(3))
        self.seen: dict[str, torch.device] = {}

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"x": tensors["X"]}

    def inference(self, x: torch.Tensor) -> dict[str, Any]:
        self.seen["inference"] = x.device
        return {"z": x * self.weight}

    def _get_generative_input(self, tensors: dict, inference_outputs: dict) -> dict[str, Any]:
        return {"z": inference_outputs["z"], "extra": [tensors["X"]]}

    def generative(self, z: torch.Tensor, extra: list[torch.Tensor]) -> dict[str, Any]:
        self.seen["generative"] = z.device
        self.seen["generative (nested)"] = extra[0].device
        return {"mean": z}

    def loss(self, tensors: dict, inference_outputs: dict, generative_outputs: dict) -> LossOutput:
        self.seen["loss"] = tensors["X"].device
        per_cell = (tensors["X"] - generative_outputs["mean"]).sum(-1)
        return LossOutput(loss=per_cell.mean(), reconstruction_loss=per_cell)

    def sample(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        self.seen["sample"] = tensors["X"].device
        return tensors["X"]

    def marginal_ll(self, tensors: dict[str, torch.Tensor], n_mc_samples: int) -> torch.Tensor:
        self.seen["marginal_ll"] = tensors["X"].device
        return tensors["X"].sum(-1)


def cpu_batch() -> dict[str, torch.Tensor]:
    return {"X": torch.ones(4, 3)}


def test_forward_and_every_entry_point_move_cpu_inputs_to_the_module_device() -> None:
    module = Recorder().to(META)
    module(cpu_batch())
    assert module.seen == dict.fromkeys(
        ["inference", "generative", "generative (nested)", "loss"], META
    )
    module.seen.clear()
    module.inference(torch.ones(4, 3))
    module.generative(torch.ones(4, 3), extra=[torch.ones(4, 3)])
    module.sample(cpu_batch())
    module.marginal_ll(cpu_batch(), n_mc_samples=1)
    module.loss(cpu_batch(), {}, {"mean": torch.ones(4, 3)})
    assert set(module.seen.values()) == {META}
    assert len(module.seen) == 6


def test_inputs_already_on_the_device_are_not_copied() -> None:
    x = torch.ones(4, 3)
    moved = move_to_device({"a": [x], "b": (x, 1), "c": "text"}, torch.device("cpu"))
    assert moved["a"][0] is x and moved["b"][0] is x
    assert moved["b"][1] == 1 and moved["c"] == "text"
    assert move_to_device(x, META).device == META


@pytest.mark.parametrize("cls", [VAE, VAEC, Recorder])
def test_builtin_and_user_modules_wrap_each_entry_point_once(cls: type) -> None:
    for name in ("forward", "inference", "generative", "loss", "sample", "marginal_ll"):
        method = getattr(cls, name, None)
        if method is None:
            continue
        assert getattr(method, "_cellvi_moves_data", False), f"{cls.__name__}.{name}"
        # Wrapped once: the function inside is the class's own, not another wrapper.
        assert not getattr(method.__wrapped__, "_cellvi_moves_data", False)


class PyroRecorder(PyroBaseModuleClass):
    def __init__(self) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(3))
        self.seen: dict[str, torch.device] = {}

    @staticmethod
    def _get_fn_args_from_batch(tensors: dict[str, torch.Tensor]) -> tuple[tuple, dict]:
        return (tensors["X"],), {}

    def model(self, x: torch.Tensor) -> None:
        self.seen["model"] = x.device

    def guide(self, x: torch.Tensor) -> None:
        self.seen["guide"] = x.device


def test_pyro_model_guide_and_fn_args_move_inputs_to_the_module_device() -> None:
    module = PyroRecorder().to(META)
    args, kwargs = module.get_fn_args(cpu_batch())
    assert args[0].device == META
    module.model(torch.ones(2, 3))
    module.guide(x=torch.ones(2, 3))
    assert module.seen == {"model": META, "guide": META}


class LazyGuideModule(PyroBaseModuleClass):
    """A Pyro module whose ``AutoNormal`` guide makes its parameters on its first call."""

    def __init__(self, n_genes: int = 5) -> None:
        super().__init__()
        self.n_genes = n_genes
        self.scale = torch.nn.Parameter(torch.ones(n_genes))
        self._guide = pyro.infer.autoguide.AutoNormal(self.model)

    @staticmethod
    def _get_fn_args_from_batch(tensors: dict[str, torch.Tensor]) -> tuple[tuple, dict]:
        return (tensors["X"],), {}

    def model(self, x: torch.Tensor) -> None:
        rate = pyro.sample("rate", dist.Gamma(x.new_ones(self.n_genes), 1.0).to_event(1))
        with pyro.plate("cells", x.shape[0]):
            pyro.sample("x", dist.Poisson(rate * self.scale).to_event(1), obs=x)

    @property
    def guide(self) -> pyro.infer.autoguide.AutoNormal:
        return self._guide


def test_pyro_on_load_creates_lazy_guide_parameters_before_the_weights_load() -> None:
    batch = {"X": torch.poisson(torch.ones(6, 5) * 2)}
    trained = LazyGuideModule()
    trained.guide(*trained.get_fn_args(batch)[0])
    saved = trained.state_dict()
    assert any(key.startswith("_guide.") for key in saved)

    fresh = LazyGuideModule()
    with pytest.raises(RuntimeError, match="Unexpected key"):
        fresh.load_state_dict(saved, strict=True)
    fresh.on_load(saved, {}, batch)
    fresh.load_state_dict(saved, strict=True)
    for key, value in saved.items():
        assert torch.equal(fresh.state_dict()[key], value), key
