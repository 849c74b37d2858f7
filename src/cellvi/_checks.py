"""Checks of keyword arguments against what a callable accepts, failing with the valid names."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np


def keyword_names(function: Callable[..., Any]) -> set[str]:
    """The names ``function`` takes as keyword arguments (``**kwargs`` aside)."""
    return {
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    }


def accepts_any_keyword(function: Callable[..., Any]) -> bool:
    """Whether ``function`` takes ``**kwargs``."""
    parameters = inspect.signature(function).parameters.values()
    return any(p.kind is p.VAR_KEYWORD for p in parameters)


def accepts_keyword(function: Callable[..., Any], name: str) -> bool:
    """Whether ``function`` takes a keyword argument ``name`` (by name or through ``**``)."""
    return name in keyword_names(function) or accepts_any_keyword(function)


def check_keywords(given: Mapping[str, Any], valid: Iterable[str], what: str) -> None:
    """Raise a ``TypeError`` naming the keys of ``given`` not in ``valid``, and the valid ones.

    Parameters
    ----------
    given
        The keyword arguments a user passed.
    valid
        The names that are understood.
    what
        Where the arguments were passed, e.g. ``"plan_kwargs"``.
    """
    valid = sorted(set(valid))
    unknown = [key for key in given if key not in valid]
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(
        f"{what} got unknown argument(s) {', '.join(hints)}. Valid names: {', '.join(valid)}."
    )


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an int, or raise naming ``name`` when it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer >= 1, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}.")
    return int(value)
