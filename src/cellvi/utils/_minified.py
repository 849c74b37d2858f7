"""``unsupported_if_adata_minified``: refuse what needs the counts a minified AnnData lacks."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

Method = TypeVar("Method", bound=Callable[..., Any])

# ``cellvi.data._constants.ADATA_MINIFY_TYPE.LATENT_POSTERIOR`` (this layer cannot import the
# data layer): data minified to the latent posterior alone, without their counts.
_WITHOUT_COUNTS = "latent_posterior_parameters"


def unsupported_if_adata_minified(method: Method) -> Method:
    """Make ``method`` raise a ``ValueError`` while its object's data are minified.

    The object (a model or a module) says so by its ``minified_data_type``; data minified
    with their counts (``"latent_posterior_parameters_with_counts"``) are not refused.
    """

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "minified_data_type", None) == _WITHOUT_COUNTS:
            raise ValueError(
                f"The {method.__qualname__} function currently does not support minified data."
            )
        return method(self, *args, **kwargs)

    return guarded  # type: ignore[return-value]
