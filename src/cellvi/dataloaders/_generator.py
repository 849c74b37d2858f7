"""Random generators for minibatch orders, reproducible yet apart from the weight stream."""

from __future__ import annotations

import numpy as np
import torch

from cellvi._settings import settings

# Any fixed number; it names the order stream so that it differs from the global one.
_ORDER_STREAM = 0x0DE5


def order_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for shuffling minibatches, seeded from ``cellvi.settings.seed``.

    ``settings.seed`` also seeds torch's global generator, which initialises the weights.
    Seeding the order generator with the same number would replay that stream: the first
    epoch's order would be drawn from the very numbers that made the first encoder weights.
    The order seed is therefore derived from ``settings.seed`` through a ``SeedSequence``, so
    runs stay reproducible and the two streams stay independent. Without a seed the generator
    is seeded from torch's global generator, so ``torch.manual_seed`` still reproduces a run.
    """
    generator = torch.Generator(device=device)
    if settings.seed is None:
        generator.manual_seed(int(torch.randint(2**62, (), dtype=torch.int64)))
    else:
        state = np.random.SeedSequence([settings.seed, _ORDER_STREAM]).generate_state(1, np.uint64)
        generator.manual_seed(int(state[0] >> np.uint64(1)))
    return generator


def distributed_seed() -> int:
    """The seed every process of a distributed run draws its epoch orders from.

    All ranks must draw the same permutation, so the seed cannot be left random: it is
    ``cellvi.settings.seed``, or 0 without one.
    """
    return 0 if settings.seed is None else int(settings.seed)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch of a distributed run (``DistributedSampler``'s seeding)."""
    return torch.Generator().manual_seed(seed + epoch)
