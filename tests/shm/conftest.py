"""Fixtures for the shared-memory store tests: a fresh store per test, and a leak check."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from concord.shm.layout import SegmentNames
from concord.shm.segments import DEV_SHM, create_store, unlink_store

_counter = itertools.count()


def _ours() -> set[str]:
    prefix = f"concord-t{os.getpid()}"
    return {n for n in os.listdir(DEV_SHM) if n.startswith(prefix)}


@pytest.fixture(autouse=True)
def no_shm_leftovers() -> Iterator[None]:
    """Every test leaves /dev/shm as it found it (segments of this test process)."""
    before = _ours()
    yield
    assert before == _ours()


@pytest.fixture
def names() -> Iterator[SegmentNames]:
    """Names for a store owned by this test; unlinked (all generations) at teardown."""
    n = SegmentNames(f"t{os.getpid()}", f"s{next(_counter)}")
    yield n
    unlink_store(n)


@pytest.fixture
def store(names: SegmentNames) -> SegmentNames:
    """A created, empty store with a small ring (64 slots) and a 4 KiB generation 0."""
    create_store(names, ring_capacity=64, initial_bytes=4096)
    return names
