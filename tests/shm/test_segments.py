"""Segment ownership: creation by the supervisor, unlinking of every generation."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from concord.shm.layout import SegmentNames, create_segment, segment_exists
from concord.shm.publisher import Publisher
from concord.shm.segments import (
    DEV_SHM,
    RECLAIM_GRACE_S,
    create_store,
    reclaim_dead_stores,
    store_segments,
    unlink_store,
)
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


_OWNER = """
import sys
from concord.shm.layout import SegmentNames
from concord.shm.segments import create_store
create_store(SegmentNames(sys.argv[1], sys.argv[2]), ring_capacity=64, initial_bytes=4096)
print("created", flush=True)
sys.stdin.read()
"""


def _owner(names: SegmentNames) -> subprocess.Popen[str]:
    """A process that creates the store `names`, then waits for EOF on stdin."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _OWNER, names.node, names.token], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert "created\n" == proc.stdout.readline()
    return proc


def _only(names: SegmentNames) -> Callable[[str], bool]:
    """keep= for reclaim_dead_stores: spare every store but this test's (others may run)."""
    return lambda base: base != names.base


@pytest.mark.slow
@pytest.mark.integration
def test_reclaim_removes_store_when_its_owner_was_killed(names: SegmentNames) -> None:
    """SIGKILL of the creating process frees the owner lock: the store is reclaimed."""
    with _owner(names) as owner:
        owner.kill()
    assert [names.ctl, names.gen(0)] == store_segments(names)
    assert [names.base] == reclaim_dead_stores(keep=_only(names))
    assert [] == store_segments(names)


@pytest.mark.slow
@pytest.mark.integration
def test_reclaim_spares_store_when_its_owner_lives(names: SegmentNames) -> None:
    """The owner lock is held while the creating process lives (and by its forks)."""
    with _owner(names):  # leaving closes its stdin: it exits
        assert [] == reclaim_dead_stores(keep=_only(names))
        assert [names.ctl, names.gen(0)] == store_segments(names)


def test_reclaim_spares_store_when_this_process_created_it(store: SegmentNames) -> None:
    """A store of the calling process is never its own leftover."""
    assert [] == reclaim_dead_stores(keep=_only(store))
    assert [store.ctl, store.gen(0)] == store_segments(store)


def test_reclaim_spares_control_segment_when_it_is_being_created(names: SegmentNames) -> None:
    """Unlocked but without its magic and recently modified: a creator is at work."""
    create_segment(names.ctl, 4096).close()  # no magic, no lock: as between open and flock
    assert [] == reclaim_dead_stores(keep=_only(names))
    assert segment_exists(names.ctl)
    os.utime(f"{DEV_SHM}/{names.ctl}", (0, time.time() - RECLAIM_GRACE_S - 1))
    assert [names.base] == reclaim_dead_stores(keep=_only(names))
    assert not segment_exists(names.ctl)
