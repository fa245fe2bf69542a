"""The log writer's decisions as effects (concord/node/core/writer.py)."""

from __future__ import annotations

import pytest

from concord.config_schema import StorageSection
from concord.errors import RemoteProtocolError
from concord.ids import NodeId
from concord.node.logwriter.settings import WriterSettings
from concord.node.core.writer import (
    RETRY_INTERVAL_S,
    ReportDisk,
    ReportPersisted,
    SnapshotPolicy,
    WriterCore,
)
from concord.raft.messages import ConfState, SnapshotMeta

CONF = ConfState((NodeId("n1"),))


def test_persisted_is_reported_after_a_flush_returned_only() -> None:
    """Durability before acknowledgement: nothing while the flush fails, all owed after."""
    w = WriterCore(SnapshotPolicy(0, 0), None, 0)
    w.on_hello()
    w.on_persist(1)
    w.on_persist(2)
    w.on_batch(2)
    effects, first = w.on_flush_failed("EIO", now_s=10.0)
    assert first and [ReportDisk("EIO", None)] == effects
    assert 10.0 + RETRY_INTERVAL_S == w.retry_due
    assert ([], False) == w.on_flush_failed("EIO", now_s=10.3)
    effects, outage = w.on_flushed(now_s=11.0)
    assert [ReportDisk(None, None), ReportPersisted(2)] == effects
    assert 1.0 == outage and w.retry_due is None
    assert ([], None) == w.on_flushed(now_s=12.0)  # nothing owed: nothing reported


def test_persist_numbers_restart_when_a_second_worker_says_hello() -> None:
    """Numbers grow within a worker's life; a restarted worker starts again from 1."""
    w = WriterCore(SnapshotPolicy(0, 0), None, 0)
    assert w.on_hello()
    w.on_persist(3)
    with pytest.raises(RemoteProtocolError):
        w.on_persist(3)
    assert not w.on_hello()
    w.on_persist(1)


def test_snapshot_is_due_at_a_committed_point_only() -> None:
    """A snapshot needs the membership at its index: known only where COMMITTED said."""
    w = WriterCore(SnapshotPolicy(10, 0), None, 0)
    w.on_hello()
    w.on_committed(12, CONF)
    w.on_applied(11, 1, 100)
    assert w.snapshot_due() is None  # 11 is not a COMMITTED point
    w.on_applied(12, 1, 10)
    assert SnapshotMeta(12, 1, CONF) == w.snapshot_due()
    assert [] == w.on_snapshot_written(SnapshotMeta(12, 1, CONF), 110)
    assert w.snapshot_due() is None


def test_failed_snapshot_is_retried_after_a_quarter_of_the_trigger() -> None:
    """A failure reports DISK and defers the next attempt; a success clears the error."""
    w = WriterCore(SnapshotPolicy(8, 0), None, 0)
    w.on_committed(8, CONF)
    w.on_applied(8, 1, 0)
    assert [ReportDisk(None, "ENOSPC")] == w.on_snapshot_failed("ENOSPC")
    assert w.snapshot_due() is None
    w.on_committed(10, None)
    w.on_applied(10, 1, 0)
    meta = w.snapshot_due()
    assert SnapshotMeta(10, 1, CONF) == meta
    assert [ReportDisk(None, None)] == w.on_snapshot_written(SnapshotMeta(10, 1, CONF), 0)


def test_replica_waits_when_the_worker_applied_nothing_new_since_start() -> None:
    """The replica runs once a worker said HELLO and applied past the recovered commit."""
    w = WriterCore(SnapshotPolicy(0, 0), SnapshotMeta(5, 1, CONF), 7)
    w.on_hello()
    w.on_committed(7, CONF)
    assert not w.replica_may_run
    w.on_committed(8, None)
    assert w.replica_may_run


def test_default_snapshot_triggers_bound_the_replay_when_keys_are_bulk_loaded() -> None:
    """
    1,000,000 keys put 500 at a time (2,000 entries of ~58,000 bytes) leave at most
    ~145,000 keys after the last snapshot for a restart to replay (64 MiB left 447,500).
    """
    storage = StorageSection()
    w = WriterCore(SnapshotPolicy(storage.snapshot_entries, storage.snapshot_bytes), None, 0)
    w.on_hello()
    entry_bytes, keys_per_entry, snapshots = 58_000, 500, 0
    for index in range(1, 2_001):
        w.on_committed(index, CONF if index == 1 else None)
        w.on_applied(index, 1, entry_bytes)
        meta = w.snapshot_due()
        if meta is not None:
            w.on_snapshot_written(meta, w.applied_bytes)
            snapshots += 1
    assert (2_000 - w.snapshot_index) * keys_per_entry <= 145_000
    assert 6 == snapshots  # every 290 entries


def test_writer_snapshot_defaults_are_the_configs() -> None:
    """A writer built without a config takes snapshots on the config's default schedule."""
    storage, settings = StorageSection(), WriterSettings()
    assert (storage.snapshot_entries, storage.snapshot_bytes) == (
        settings.snapshot_entries, settings.snapshot_bytes)
