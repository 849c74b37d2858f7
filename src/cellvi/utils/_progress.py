"""``track``: the progress bar of long queries (posterior sampling, differential expression)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from cellvi._settings import settings

T = TypeVar("T")

#: A query that ends sooner than this (seconds) never shows its bar.
DELAY = 1.0


def track(
    items: Iterable[T], description: str, silent: bool = False, total: int | None = None
) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar on stderr, for queries that take a while.

    The bar appears only once the query has run for :data:`DELAY` seconds, so quick queries
    print nothing, and it is removed when the query ends. ``silent`` hides it, and so does
    ``cellvi.settings.verbosity`` above ``WARNING`` (``"ERROR"``: nothing but errors).

    Parameters
    ----------
    items
        What the query iterates over (minibatches, groups, ...).
    description
        The bar's label.
    silent
        Hide the bar.
    total
        The number of items, when ``items`` has no length.
    """
    if silent or settings.verbosity > logging.WARNING:
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(
        items,
        desc=description,
        total=total,
        leave=False,
        delay=DELAY,
        file=sys.stderr,
        dynamic_ncols=True,
    )
