"""Pyro plans fit by ``cellvi.train.Trainer`` on an ``AnnDataLoader``, with guide warm-ups.

An ``AutoNormal`` guide creates its parameters on its first call. ``PyroModelGuideWarmup``
runs it at setup (before the optimizer exists), ``PyroJitGuideWarmup`` when training starts.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroSample

import cellvi
from cellvi import REGISTRY_KEYS
from cellvi.data import AnnDataManager
from cellvi.data.fields import LayerField
from cellvi.dataloaders import AnnDataLoader
from cellvi.model.base import PyroJitGuideWarmup, PyroModelGuideWarmup
from cellvi.module.base import PyroBaseModuleClass
from cellvi.train import LowLevelPyroTrainingPlan, PyroTrainingPlan, Trainer

N_GENES = 100  # synthetic_iid's
GUIDE_PARAMS = {"_guide.locs.rate_unconstrained", "_guide.scales.rate_unconstrained"}


class Rates(PyroModule):
    """Per-gene Poisson rates with a Gamma prior; ``scale``: also a learnt per-gene factor."""

    def __init__(self, scale: bool) -> None:
        super().__init__()
        self.rate = PyroSample(lambda _: dist.Gamma(torch.ones(N_GENES), 1.0).to_event(1))
        self.scale = torch.nn.Parameter(torch.zeros(N_GENES)) if scale else None

    def forward(self, x: torch.Tensor) -> None:
        rate = self.rate
        if self.scale is not None:
            rate = rate * torch.exp(self.scale)
        with pyro.plate("cells", x.shape[0]):
            pyro.sample("x", dist.Poisson(rate).to_event(1), obs=x)


class GeneRates(PyroBaseModuleClass):
    """``Rates`` inferred by an ``AutoNormal`` guide, which makes its parameters when first run.

    Without ``scale`` the module has no parameter at all before its guide runs.
    """

    def __init__(self, scale: bool = False) -> None:
        super().__init__()
        self._model = Rates(scale)
        self._guide = pyro.infer.autoguide.AutoNormal(self._model)

    @staticmethod
    def _get_fn_args_from_batch(tensors: dict[str, torch.Tensor]) -> tuple[tuple, dict]:
        return (tensors[REGISTRY_KEYS.X_KEY],), {}

    @property
    def model(self) -> Rates:
        return self._model

    @property
    def guide(self) -> pyro.infer.autoguide.AutoNormal:
        return self._guide


@pytest.fixture
def loader() -> AnnDataLoader:
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid(seed=0)
    manager = AnnDataManager(fields=[LayerField(REGISTRY_KEYS.X_KEY, None, is_count_data=True)])
    manager.register_fields(adata)
    return AnnDataLoader(manager, batch_size=100, shuffle=True)


class _OptimizerAtStart(pl.Callback):
    """Record the number of parameters the optimizer holds when training starts."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        self.n_params = sum(len(group["params"]) for group in optimizer.param_groups)


def _guide_params(module: GeneRates) -> dict[str, torch.Tensor]:
    return {
        name: value.detach().clone()
        for name, value in module.named_parameters()
        if name.startswith("_guide.")
    }


def _fit(plan: pl.LightningModule, loader: AnnDataLoader, callbacks: list, epochs: int = 3):
    trainer = Trainer(
        max_epochs=epochs, accelerator="cpu", enable_progress_bar=False, callbacks=callbacks
    )
    trainer.fit(plan, train_dataloaders=loader)
    return trainer


@pytest.mark.parametrize("plan_cls", [PyroTrainingPlan, LowLevelPyroTrainingPlan])
def test_model_guide_warmup_creates_the_guide_parameters_before_the_optimizer(
    plan_cls, loader
) -> None:
    module = GeneRates()
    assert list(module.parameters()) == []
    warmup, at_start = PyroModelGuideWarmup(loader), _OptimizerAtStart()
    trainer = _fit(plan_cls(module, optim_kwargs={"lr": 0.05}), loader, [warmup, at_start])
    params = _guide_params(module)
    assert set(params) == GUIDE_PARAMS
    # The optimizer held them from the start, and training moved them.
    assert at_start.n_params == 2
    assert trainer.global_step == 3 * 4  # 400 cells in minibatches of 100, three epochs
    assert list(trainer.logger.history["elbo_train"].index) == [0, 1, 2]
    # The rates start at 1 (log-rate 0) and move towards each gene's mean count.
    counts = torch.cat([batch[REGISTRY_KEYS.X_KEY] for batch in loader])
    far = (counts.mean(0).log()).abs() > 0.5
    moved = params["_guide.locs.rate_unconstrained"]
    assert far.sum() > 10
    agree = torch.sign(moved[far]) == torch.sign(counts.mean(0).log()[far])
    assert agree.float().mean() > 0.9


def test_without_a_warmup_a_module_without_parameters_fails_clearly(loader) -> None:
    trainer = Trainer(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    with pytest.raises(ValueError, match="PyroModelGuideWarmup"):
        trainer.fit(PyroTrainingPlan(GeneRates()), train_dataloaders=loader)


@pytest.mark.parametrize("plan_cls", [PyroTrainingPlan, LowLevelPyroTrainingPlan])
def test_jit_guide_warmup_runs_the_guide_when_training_starts(plan_cls, loader) -> None:
    module = GeneRates(scale=True)
    assert [name for name, _ in module.named_parameters()] == ["_model.scale"]
    plan = plan_cls(module, loss_fn=pyro.infer.JitTrace_ELBO(), optim_kwargs={"lr": 0.05})
    trainer = _fit(plan, loader, [PyroJitGuideWarmup(loader)], epochs=2)
    params = _guide_params(module)
    assert set(params) == GUIDE_PARAMS
    # The guide's parameters joined the optimizer and were trained.
    optimizer = trainer.optimizers[0]
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in module.parameters())
    assert (params["_guide.locs.rate_unconstrained"]).abs().max() > 0.1
    assert torch.isfinite(torch.as_tensor(trainer.logger.history["elbo_train"].to_numpy())).all()


def test_jit_guide_warmup_defaults_to_the_training_loader(loader) -> None:
    module = GeneRates(scale=True)
    _fit(PyroTrainingPlan(module), loader, [PyroJitGuideWarmup()], epochs=1)
    assert set(_guide_params(module)) == GUIDE_PARAMS


def test_a_warmup_on_an_empty_loader_fails_clearly(loader) -> None:
    with pytest.raises(ValueError, match="without any minibatch"):
        _fit(PyroTrainingPlan(GeneRates()), loader, [PyroModelGuideWarmup([])], epochs=1)


def test_jit_warmup_of_a_module_whose_parameters_are_all_made_by_its_guide(loader) -> None:
    # As scvi-tools runs it: JIT loss, the warm-up given the loader, the loader given to fit.
    module = GeneRates()
    plan = PyroTrainingPlan(module, loss_fn=pyro.infer.JitTrace_ELBO(), optim_kwargs={"lr": 0.05})
    trainer = _fit(plan, loader, [PyroJitGuideWarmup(loader)], epochs=2)
    assert set(_guide_params(module)) == GUIDE_PARAMS
    assert trainer.global_step == 2 * 4
    elbo = trainer.logger.history["elbo_train"]["elbo_train"].to_numpy()
    assert elbo[1] < elbo[0]
