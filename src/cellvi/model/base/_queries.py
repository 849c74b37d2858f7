"""``posterior_query``: the guard every query of a trained model runs under."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

Query = TypeVar("Query", bound=Callable[..., Any])


def posterior_query(query: Query) -> Query:
    """Run a model method as a posterior query: trained model, module in eval mode.

    Training leaves the module in eval mode, but a user who switched it back (to fine-tune,
    or by calling ``model.module.train()``) would otherwise get answers with dropout on and
    batch statistics of the query's minibatch, and each query would move the batch-norm
    running averages. The module's mode is restored afterwards, so a query never changes it.
    """

    @functools.wraps(query)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._check_if_trained()
        module = self.module
        was_training = module.training
        module.eval()
        try:
            return query(self, *args, **kwargs)
        finally:
            module.train(was_training)

    return guarded  # type: ignore[return-value]
