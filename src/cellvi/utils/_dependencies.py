"""Optional dependencies: check they are installed, at call time rather than at import."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def is_package_installed(module: str) -> bool:
    """Whether ``module`` can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def error_on_missing_dependencies(*modules: str) -> None:
    """Raise a ``ModuleNotFoundError`` naming each of ``modules`` that cannot be imported."""
    missing = [module for module in modules if not is_package_installed(module)]
    if missing:
        raise ModuleNotFoundError(f"Please install {missing} to use this functionality.")


def dependencies(*modules: str) -> Callable[[F], F]:
    """Decorate a function that needs ``modules``: calling it without them raises clearly.

    The check runs at each call, so the decorated function's module imports without them.

    Examples
    --------
    >>> @dependencies("dask")
    ... def to_dask(array): ...
    """

    def decorator(function: F) -> F:
        @functools.wraps(function)
        def checked(*args: Any, **kwargs: Any) -> Any:
            error_on_missing_dependencies(*modules)
            return function(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return decorator
