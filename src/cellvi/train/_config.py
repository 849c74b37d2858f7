"""Configuration objects for training plans and the trainer, and how they merge with kwargs."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from cellvi.train._pyro_plan import LowLevelPyroTrainingPlan, PyroTrainingPlan
from cellvi.train._trainer import Trainer
from cellvi.train._trainingplan import TrainingPlan


@runtime_checkable
class KwargsConfig(Protocol):
    """A configuration that expands into keyword arguments."""

    def to_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the object it configures."""


KwargsLike = Mapping[str, Any] | KwargsConfig


def merge_kwargs(
    config: KwargsLike | None, overrides: KwargsLike | None, *, name: str
) -> dict[str, Any]:
    """The keyword arguments of ``config`` updated with ``overrides`` (which win).

    Parameters
    ----------
    config, overrides
        ``None``, a mapping, or an object whose ``to_kwargs()`` returns a dict (such as
        :class:`TrainingPlanConfig`).
    name
        What the arguments are for (``"plan"``, ``"trainer"``), for error messages.

    Raises
    ------
    TypeError
        When either is none of those, or ``to_kwargs()`` returns something else than a dict.
    """
    merged = _as_kwargs(config, f"{name}_config")
    merged.update(_as_kwargs(overrides, name))
    return merged


def _as_kwargs(value: KwargsLike | None, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    to_kwargs = getattr(value, "to_kwargs", None)
    if not callable(to_kwargs):
        raise TypeError(f"{name} must be a mapping or a config with to_kwargs(), got {value!r}.")
    kwargs = to_kwargs()
    if not isinstance(kwargs, dict):
        raise TypeError(f"{name}.to_kwargs() must return a dict, got {type(kwargs).__name__}.")
    return dict(kwargs)


def _config_class(name: str, target: Callable[..., Any], rest: str | None) -> type:
    """A dataclass with one field per keyword of ``target`` (same defaults), and ``rest``.

    Its fields are read from ``target``'s signature, so a config can never disagree with
    what it configures. ``rest`` (when given) is a dict field for ``target``'s ``**kwargs``.
    """
    fields: list[tuple[str, Any, Any]] = []
    for parameter in inspect.signature(target).parameters.values():
        if parameter.default is parameter.empty or parameter.kind is parameter.VAR_KEYWORD:
            continue  # ``self`` and the module are not configuration
        default = parameter.default
        spec = (
            dataclasses.field(default_factory=lambda d=default: type(d)(d))
            if isinstance(default, dict | list)
            else dataclasses.field(default=default)
        )
        fields.append((parameter.name, parameter.annotation, spec))
    if rest is not None:
        fields.append((rest, "dict[str, Any]", dataclasses.field(default_factory=dict)))
    owner = getattr(target, "__qualname__", "").split(".")[0]
    doc = (
        f"Arguments of :class:`{owner}`, one field each with its default"
        + (f"; ``{rest}`` holds the arguments it takes through ``**kwargs``." if rest else ".")
        + "\n\nPass it as ``plan_config`` / ``trainer_config`` of ``train()``, or expand it with"
        " :meth:`to_kwargs`."
    )
    return dataclasses.make_dataclass(
        name,
        fields,
        namespace={"to_kwargs": _to_kwargs, "_rest": rest, "__doc__": doc, "__module__": __name__},
    )


def _to_kwargs(self: Any) -> dict[str, Any]:
    """The configured keyword arguments (the ``**kwargs`` field flattened into them)."""
    kwargs = {
        f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != self._rest
    }
    extra = getattr(self, self._rest) if self._rest else {}
    repeated = sorted(set(extra) & set(kwargs))
    if repeated:
        raise TypeError(
            f"{type(self).__name__}.{self._rest} repeats {repeated}, which are fields of their "
            "own: set them there."
        )
    return {**kwargs, **extra}


TrainingPlanConfig = _config_class("TrainingPlanConfig", TrainingPlan.__init__, "loss_kwargs")
PyroTrainingPlanConfig = _config_class("PyroTrainingPlanConfig", PyroTrainingPlan.__init__, None)
LowLevelPyroTrainingPlanConfig = _config_class(
    "LowLevelPyroTrainingPlanConfig", LowLevelPyroTrainingPlan.__init__, None
)
TrainerConfig = _config_class("TrainerConfig", Trainer.__init__, "extra_kwargs")
