"""``StopOnInterrupt``: Ctrl+C ends training cleanly at the next step, keeping what was learnt."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import lightning.pytorch as pl


class StopOnInterrupt(pl.Callback):
    """Turn the first Ctrl+C of a fit into a clean stop after the current training step.

    Lightning alone answers Ctrl+C by exiting the process (``SystemExit``), which throws a
    notebook's partial fit away. While :meth:`catching` is active, the first SIGINT only asks
    the trainer to stop after the step under way; the epoch's metrics are logged as usual and
    the model keeps its weights. A second Ctrl+C aborts at once, as a ``KeyboardInterrupt``.
    """

    def __init__(self) -> None:
        self.requested = False
        #: Epoch and global step after which the fit stopped (set once it did).
        self.stopped_at: tuple[int, int] | None = None

    @contextlib.contextmanager
    def catching(self) -> Iterator[None]:
        """Handle SIGINT as described above (only in the main thread, where signals arrive)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nCtrl+C: training stops after this step and keeps what it learnt "
            "(press Ctrl+C again to abort).",
            file=sys.stderr,
            flush=True,
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        """Stop the fit once an interrupt was requested."""
        if self.requested and self.stopped_at is None:
            trainer.should_stop = True
            self.stopped_at = (trainer.current_epoch, trainer.global_step)
