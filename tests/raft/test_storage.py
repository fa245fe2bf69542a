"""MemoryStorage: the Storage protocol, snapshots and compaction (etcd storage tests)."""

from __future__ import annotations

import pytest

from concord.errors import CompactedError, RaftInvariantError, SnapshotOutOfDateError
from concord.errors import UnavailableError
from concord.ids import NodeId
from concord.raft import ConfState, Entry, MemoryStorage, Snapshot, SnapshotMeta

CS = ConfState(voters=(NodeId("a"),))


def filled(n: int = 5) -> MemoryStorage:
    storage = MemoryStorage(CS)
    storage.append([Entry(1 + i // 2, i + 1, data=b"x" * 10) for i in range(n)])
    return storage


def test_entries_are_returned_when_in_range() -> None:
    """entries(lo, hi) is [lo, hi), and term(first_index - 1) answers the dummy."""
    storage = filled()
    assert [2, 3] == [e.index for e in storage.entries(2, 4)]
    assert (1, 5) == (storage.first_index(), storage.last_index())
    assert 0 == storage.term(0)


def test_entries_are_size_limited_when_max_bytes_is_small() -> None:
    """At least one entry is returned, then as many as fit (16 bytes overhead each)."""
    storage = filled()
    assert [1] == [e.index for e in storage.entries(1, 6, 1)]
    assert [1, 2] == [e.index for e in storage.entries(1, 6, 52)]


def test_append_truncates_when_entries_conflict() -> None:
    """An entry at index i replaces everything from i on."""
    storage = filled()
    storage.append([Entry(9, 3)])
    assert [1, 1, 9] == [storage.term(i) for i in (1, 2, 3)]
    assert 3 == storage.last_index()


def test_append_raises_when_entries_leave_a_gap() -> None:
    """Appending past last_index() + 1 is a caller bug."""
    storage = filled()
    with pytest.raises(RaftInvariantError):
        storage.append([Entry(9, 8)])


def test_compacted_entries_raise_when_read() -> None:
    """After compact(i) entries <= i raise CompactedError and term(i) still answers."""
    storage = filled()
    storage.create_snapshot(3, None, b"state")
    storage.compact(3)
    assert 4 == storage.first_index()
    assert 2 == storage.term(3)
    with pytest.raises(CompactedError):
        storage.entries(3, 5)
    with pytest.raises(CompactedError):
        storage.compact(2)
    with pytest.raises(UnavailableError):
        storage.entries(4, 9)


def test_snapshot_is_recorded_when_created() -> None:
    """create_snapshot takes the entry's term; older snapshots are refused."""
    storage = filled()
    snap = storage.create_snapshot(4, CS, b"data")
    assert Snapshot(SnapshotMeta(4, 2, CS), b"data") == snap
    assert snap == storage.snapshot()
    with pytest.raises(SnapshotOutOfDateError):
        storage.create_snapshot(3, CS, b"old")


def test_apply_snapshot_replaces_log_when_newer() -> None:
    """apply_snapshot drops every entry; the snapshot's position becomes the dummy."""
    storage = filled()
    storage.apply_snapshot(Snapshot(SnapshotMeta(10, 4, CS), b"s"))
    assert (11, 10, 4) == (storage.first_index(), storage.last_index(), storage.term(10))
    with pytest.raises(SnapshotOutOfDateError):
        storage.apply_snapshot(Snapshot(SnapshotMeta(9, 4, CS), b"s"))
