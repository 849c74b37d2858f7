"""Distributed fits: which process writes files, and what a lost process means."""

from __future__ import annotations

import re

from lightning.fabric.utilities.rank_zero import rank_zero_only

# What torch's process-group backends (gloo, NCCL) say when a peer process is gone or stuck.
_LOST_PEER = re.compile(r"gloo|nccl|peer|timed out|timeout|connection", re.IGNORECASE)


def is_global_zero() -> bool:
    """Whether this process is rank 0 of its run (always, outside a distributed run).

    Lightning sets the rank in every process it launches, before the user's script goes on
    after ``train``; the processes of one run then each hold the same trained model, and
    rank 0 alone writes it (``save``, checkpoints).
    """
    return getattr(rank_zero_only, "rank", 0) == 0


def lost_process_error(error: BaseException, world_size: int) -> RuntimeError | None:
    """A clear error for a distributed fit that lost one of its processes, else ``None``.

    A rank that dies (killed, out of memory) breaks the next collective operation of the
    others: the backend raises at once when the connection drops, or after the process
    group's timeout when a rank hangs (``DDPStrategy(timeout=...)``, 30 minutes by default).
    """
    if world_size <= 1 or not isinstance(error, RuntimeError) or not _LOST_PEER.search(str(error)):
        return None
    return RuntimeError(
        f"The distributed fit stopped: another of its {world_size} processes ended or stopped "
        "answering (killed, out of memory, or a failure of its own: see its log); the model "
        f"is left as it was before train(). Backend error: {error}"
    )
