"""Every random draw of training, keyed by what it is for and where it happens.

A draw never depends on how many draws came before: each comes from a generator
seeded with (seed, epoch[, step, stream[, rank]]). That is what makes a resumed run
equal an uninterrupted one, and N data-parallel processes equal one process.
"""

from __future__ import annotations

import hashlib

import torch

# The stream numbers are part of the exact-resume contract: changing one changes
# every run's crops or dropout masks.
STREAM_AUGMENT = 1  # (seed, epoch, step, 1): crops, flips and lighting of a global batch
STREAM_DROPOUT = 2  # (seed, epoch, step, 2, rank): dropout masks of one process's batch
# (seed, epoch) alone seeds the epoch's order.


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of integers, the same on every machine."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator_for(*parts: int) -> torch.Generator:
    """A torch generator seeded with derive_seed(*parts)."""
    return torch.Generator().manual_seed(derive_seed(*parts))
