"""Items produced ahead by a background thread, a bounded number at a time."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")
# How often a blocked producer checks that its consumer still wants items (seconds).
_POLL_S = 0.1


def prefetched(items: Iterable[Item], depth: int) -> Iterator[Item]:
    """Iterate ``items`` while a background thread produces up to ``depth`` of them ahead.

    At most ``depth + 2`` items exist at once (``depth`` waiting, one being produced, one in
    the consumer's hands), which is what bounds an out-of-core loader's host memory. An error
    raised while producing is raised here, in the consumer; leaving the loop early (``break``,
    an error in the consumer) stops the thread. ``depth=0`` produces in the caller's thread.
    """
    if depth == 0:
        yield from items
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(message: tuple[str, object]) -> bool:
        while not stop.is_set():
            try:
                ready.put(message, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(("item", item)):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            offer(("error", error))
        else:
            offer(("end", None))

    thread = threading.Thread(target=produce, name="cellvi-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()
