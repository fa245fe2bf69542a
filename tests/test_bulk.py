"""concord.bulk: the cyclic GC around bulk builds of millions of objects."""

from __future__ import annotations

import gc
import weakref

import pytest

from concord.bulk import long_lived_build


class _Node:
    """A GC-tracked object that can be weakly referenced."""

    partner: object = None


def test_long_lived_build_freezes_what_it_built_when_it_ends() -> None:
    """Garbage from before is collected, not frozen; what was built is frozen; GC on again."""
    cycle = _Node()
    cycle.partner = cycle
    probe = weakref.ref(cycle)
    del cycle
    before = gc.get_freeze_count()
    try:
        with long_lived_build():
            assert not gc.isenabled()
            built = [_Node() for _ in range(1_000)]
        assert gc.isenabled()
        assert probe() is None
        assert gc.get_freeze_count() >= before + len(built)
    finally:
        gc.unfreeze()


def test_long_lived_build_freezes_nothing_when_the_build_fails() -> None:
    """A failed build (a corrupt snapshot) leaves the GC on and nothing frozen."""
    before = gc.get_freeze_count()
    try:
        with pytest.raises(ValueError, match="corrupt"), long_lived_build():
            raise ValueError("corrupt")
        assert gc.isenabled()
        assert before == gc.get_freeze_count()
    finally:
        gc.unfreeze()
