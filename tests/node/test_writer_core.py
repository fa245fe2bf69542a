"""The log writer's decisions as effects (concord/node/core/writer.py)."""

from __future__ import annotations

import pytest

from concord.errors import RemoteProtocolError
from concord.ids import NodeId
from concord.node.core.writer import (
    RETRY_INTERVAL_S,
    ReportDisk,
    ReportPersisted,
    WriterCore,
)
from concord.raft.messages import ConfState, SnapshotMeta

CONF = ConfState((NodeId("n1"),))


def test_persisted_is_reported_after_a_flush_returned_only() -> None:
    """Durability before acknowledgement: nothing while the flush fails, all owed after."""
    w = WriterCore(None)
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
    w = WriterCore(None)
    assert w.on_hello()
    w.on_persist(3)
    with pytest.raises(RemoteProtocolError):
        w.on_persist(3)
    assert not w.on_hello()
    w.on_persist(1)


def test_snapshot_compacts_when_it_is_newer_than_every_one_before_only() -> None:
    """SNAPSHOT_TAKEN or an installed snapshot: only a newer one moves the snapshot index."""
    w = WriterCore(SnapshotMeta(5, 1, CONF))
    assert not w.on_snapshot(SnapshotMeta(5, 1, CONF))
    assert w.on_snapshot(SnapshotMeta(12, 1, CONF))
    assert not w.on_snapshot(SnapshotMeta(9, 1, CONF))
    assert 12 == w.snapshot_index
