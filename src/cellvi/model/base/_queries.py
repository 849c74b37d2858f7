"""``posterior_query``: the guard every query of a model runs under."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, Literal, TypeVar

Query = TypeVar("Query", bound=Callable[..., Any])


def posterior_query(
    query: Query | None = None, *, untrained: Literal["raise", "warn"] = "raise"
) -> Query | Callable[[Query], Query]:
    """Run a model method as a posterior query: module in eval mode, training checked.

    Training leaves the module in eval mode, but a user who switched it back (to fine-tune,
    or by calling ``model.module.train()``) would otherwise get answers with dropout on and
    batch statistics of the query's minibatch, and each query would move the batch-norm
    running averages. The module's mode is restored afterwards, so a query never changes it.

    Parameters
    ----------
    query
        The method to guard (``@posterior_query`` without arguments).
    untrained
        What an untrained model gets: ``"raise"`` (a ``RuntimeError``: the answer would mean
        nothing, e.g. a latent representation) or ``"warn"`` (a ``UserWarning``, then the
        answer: e.g. the ELBO, which users compare before and after training).

    Examples
    --------
    >>> @posterior_query
    ... def get_latent(self, adata=None): ...
    >>> @posterior_query(untrained="warn")
    ... def get_elbo(self, adata=None): ...
    """
    if untrained not in ("raise", "warn"):
        raise ValueError(f"untrained must be 'raise' or 'warn', got {untrained!r}.")

    def decorate(method: Query) -> Query:
        @functools.wraps(method)
        def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
            if untrained == "raise":
                self._check_if_trained()
            elif not self.is_trained_:
                warnings.warn(
                    f"This {type(self).__name__} model is not trained yet; "
                    f"{method.__name__} describes its initial weights.",
                    UserWarning,
                    stacklevel=2,
                )
            module = self.module
            # Each submodule's own mode, restored afterwards: a user may hold some parts in
            # eval mode (frozen batch norm) while the rest trains.
            modes = [(part, part.training) for part in module.modules()]
            module.eval()
            try:
                return method(self, *args, **kwargs)
            finally:
                for part, training in modes:
                    part.training = training

        return guarded  # type: ignore[return-value]

    return decorate if query is None else decorate(query)
