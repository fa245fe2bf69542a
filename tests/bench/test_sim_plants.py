"""bench/sim_plants.py stays in step with the code: every planted mistake still applies."""

from __future__ import annotations

from bench.sim_plants import PLANTS, ROOT


def test_every_plant_applies_once_when_checked_against_the_tree() -> None:
    """Each plant's original text occurs exactly once in its file (code moved: update the plant)."""
    counts = {plant.name: (ROOT / plant.path).read_text().count(plant.old) for plant in PLANTS}
    assert {name: 1 for name in counts} == counts
