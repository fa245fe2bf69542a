"""Segment ownership: creation by the supervisor, unlinking of every generation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from concord.shm.layout import SegmentNames, segment_exists
from concord.shm.publisher import Publisher
from concord.shm.segments import create_store, store_segments, unlink_store
from concord.shm.view import ShmView

from tests.helpers import wait_until

from .helpers import put


def test_create_store_makes_control_and_first_generation_when_new(names: SegmentNames) -> None:
    """A new store is one control segment and generation 0."""
    create_store(names, ring_capacity=64)
    assert [names.ctl, names.gen(0)] == store_segments(names)


def test_create_store_raises_when_store_exists(store: SegmentNames) -> None:
    """Creating over an existing store fails instead of clobbering it."""
    with pytest.raises(FileExistsError):
        create_store(store, ring_capacity=64)


def test_create_store_rejects_ring_when_not_power_of_two(names: SegmentNames) -> None:
    """The ring capacity must be a power of two."""
    with pytest.raises(ValueError):
        create_store(names, ring_capacity=100)
    assert [] == store_segments(names)


def test_unlink_store_removes_every_generation_when_writer_grew(store: SegmentNames) -> None:
    """Generations the writer created are unlinked too, and nothing is left."""
    pub = Publisher.attach(store)
    for i in range(200):  # 4 KiB generation 0 must grow several times (in place)
        pub.publish([put(f"k{i}", "v" * 50, i + 1)], i + 1, i + 1, 0)
    pub.compact()
    pub.compact()
    gen = pub.stats().generation
    pub.close()
    assert gen >= 2
    assert [store.ctl, store.gen(gen)] == store_segments(store)
    removed = unlink_store(store)
    assert {store.ctl, store.gen(gen)} == set(removed)
    assert [] == store_segments(store)


def test_unlink_store_succeeds_when_nothing_exists(names: SegmentNames) -> None:
    """Unlinking twice (or after a failed start) is harmless."""
    assert [] == unlink_store(names)


REPO = Path(__file__).resolve().parents[2]

_READER = """
import sys
from concord.shm.layout import SegmentNames
from concord.shm.view import ShmView
view = ShmView.attach(SegmentNames(sys.argv[1], sys.argv[2]))
ok = view.get_value("k") == "v"
view.close()
sys.exit(0 if ok else 3)
"""

_NAIVE_READER = """
import sys
from multiprocessing.shared_memory import SharedMemory
shm = SharedMemory(sys.argv[1])
shm.close()
"""


def _run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    # A fresh interpreter: it has its own resource tracker, which is what unlinks
    # segments registered by a process when that process exits.
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.slow
@pytest.mark.integration
def test_segments_survive_when_attached_reader_process_exits(store: SegmentNames) -> None:
    """Python 3.11: a reader process that attaches and exits does not unlink the store."""
    pub = Publisher.attach(store)
    pub.publish([put("k", "v", 1)], 1, 1, 0)
    done = _run_child(_READER, store.node, store.token)
    assert 0 == done.returncode, done.stderr
    assert "" == done.stderr
    assert segment_exists(store.ctl)
    assert segment_exists(store.gen(0))
    view = ShmView.attach(store)
    assert "v" == view.get_value("k")
    view.close()
    pub.close()


@pytest.mark.slow
@pytest.mark.integration
def test_naive_attach_unlinks_segment_when_reader_process_exits(store: SegmentNames) -> None:
    """The hazard the view avoids: SharedMemory(name) in a reader unlinks at its exit."""
    done = _run_child(_NAIVE_READER, store.ctl)
    assert 0 == done.returncode, done.stderr
    # The child's resource tracker unlinks after the child exited.
    wait_until(lambda: not segment_exists(store.ctl), 10.0, describe="ctl still exists")
