"""
FoundationDB-style BUGGIFY: rare-but-legal behaviour injected at named sites.

Inert outside the simulator: `buggify(site)` returns False and `knob()` the default
unless a `Buggify` is active (only `concord.sim` activates one, for one run). In a run,
each site is switched on with p = 0.25 the first time it is reached, then fires with
p = 0.25 per call; knob values are picked the same way. Every decision comes from the
run's seed (a site's on/off from the seed and the site name alone), so a seed replays.

Production code may call `buggify()` only where every outcome is legal behaviour
(a dropped message, a slower disk, an early snapshot), never to break a contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from concord.sim.rng import SimRandom, derive_seed

__all__ = ["Buggify", "buggify", "knob", "active"]

T = TypeVar("T")

SITE_ON_P = 0.25
FIRE_P = 0.25


class Buggify:
    """The buggify state of one simulation run."""

    def __init__(self, seed: int, enabled: bool = True) -> None:
        self.seed = seed
        self.enabled = enabled
        self._rng = SimRandom(derive_seed(seed, "buggify-fire"))
        self._sites: dict[str, bool] = {}
        self.fired: dict[str, int] = {}

    def site_on(self, site: str) -> bool:
        on = self._sites.get(site)
        if on is None:
            on = SimRandom(derive_seed(self.seed, "site/" + site)).random() < SITE_ON_P
            self._sites[site] = on
        return on

    def fire(self, site: str) -> bool:
        if not self.enabled or not self.site_on(site):
            return False
        if self._rng.random() < FIRE_P:
            self.fired[site] = self.fired.get(site, 0) + 1
            return True
        return False

    def knob(self, site: str, default: T, choices: Sequence[T]) -> T:
        if not self.enabled or not self.site_on(site):
            return default
        return SimRandom(derive_seed(self.seed, "knob/" + site)).choice(list(choices))


_active: Buggify | None = None


def active() -> Buggify | None:
    return _active


def activate(state: Buggify | None) -> None:
    """Install (or with None remove) the run's buggify state. Simulator only."""
    global _active
    _active = state


def buggify(site: str) -> bool:
    """True when the simulator decides `site` should misbehave now; always False outside."""
    state = _active
    return state is not None and state.fire(site)


def knob(site: str, default: T, choices: Sequence[T]) -> T:
    """`default` outside the simulator; in a run maybe one of `choices` (fixed per run)."""
    state = _active
    return default if state is None else state.knob(site, default, choices)
