"""The init parameters a model records for save and load, in scvi-tools' layout."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def record_init_params(init: Callable[..., Any], init_locals: dict[str, Any]) -> dict[str, Any]:
    """The arguments ``init`` was called with, from its ``locals()``.

    Returns ``{"kwargs": {name of **kwargs: their dict}, "non_kwargs": {name: value}}`` (the
    AnnData left out), the layout scvi-tools records as ``init_params_``.
    """
    params: dict[str, dict[str, Any]] = {"kwargs": {}, "non_kwargs": {}}
    for name, parameter in inspect.signature(init).parameters.items():
        if name in ("self", "adata", "registry") or name not in init_locals:
            continue
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            params["kwargs"][name] = dict(init_locals[name])
        else:
            params["non_kwargs"][name] = init_locals[name]
    return params


def init_arguments(init_params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``__init__`` recorded by :func:`record_init_params`.

    Also reads the flat layout of files written by cellvi 0.1.
    """
    if set(init_params) != {"kwargs", "non_kwargs"}:
        return dict(init_params)
    arguments = dict(init_params["non_kwargs"])
    for extra in init_params["kwargs"].values():
        arguments.update(extra)
    return arguments
