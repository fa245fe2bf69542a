"""
Seeded randomness for the simulator: one root stream per seed, named child streams.

Pure. Never touches the global `random` module. `fork(name)` derives a child from the
parent's seed and the name only, never from the parent's draws, so adding a draw in one
consumer (the network, say) never shifts what another (the disk) sees.
"""

from __future__ import annotations

import hashlib
import random

__all__ = ["SimRandom", "derive_seed"]


def derive_seed(seed: int, name: str) -> int:
    """A 64-bit seed from a parent seed and a child name (stable across processes)."""
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class SimRandom(random.Random):
    """A `random.Random` that remembers its seed and forks named children."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.seed_value = seed

    def fork(self, name: str) -> SimRandom:
        """A child stream named `name`; the same name always gives the same stream."""
        return SimRandom(derive_seed(self.seed_value, name))

    def chance(self, p: float) -> bool:
        """True with probability p (no draw when p is 0 or 1)."""
        if p <= 0.0:
            return False
        if p >= 1.0:
            return True
        return self.random() < p
