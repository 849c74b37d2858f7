"""``attrdict``: a read-only dict whose keys are also attributes (``stats.n_batch``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn


class attrdict(dict):  # scvi-tools' name
    """A read-only dictionary whose keys read as attributes too.

    Nested mappings become ``attrdict`` as well, so ``registry.batch.attr_name`` works. It
    equals the plain dict with the same items. Writes raise a ``TypeError``: an ``attrdict``
    is a view of a registry, and a write to it would otherwise be silently lost.

    Parameters
    ----------
    *args, **kwargs
        As for :class:`dict`.

    Examples
    --------
    >>> stats = attrdict({"n_batch": 2, "location": {"attr_name": "obs"}})
    >>> stats.n_batch, stats.location.attr_name
    (2, 'obs')
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        items = dict(*args, **kwargs)
        super().__init__(
            (key, attrdict(value) if isinstance(value, Mapping) else value)
            for key, value in items.items()
        )

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(
                f"No key {name!r} in this attrdict; keys: {list(self)}."
            ) from error

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *(key for key in self if isinstance(key, str))]

    def __reduce__(self) -> tuple[type, tuple[dict]]:
        # Copies and pickles rebuild through __init__, never through the refused writes.
        return type(self), (dict(self),)

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("An attrdict is read-only; copy it with dict(...) to change it.")

    __setitem__ = __delitem__ = __setattr__ = __delattr__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __repr__(self) -> str:
        return f"attrdict({dict.__repr__(self)})"
