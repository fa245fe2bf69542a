"""The front door's reads over its own view (DoorReads): attached on a thread, declined until then."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from concord.config import NodeConfig, parse_config
from concord.kv.record import Change, ChangeType, KeyRecord, Space
from concord.net.door_reads import Verdict
from concord.net.wire import Request
from concord.node.shm_reads import DoorReads
from concord.shm.layout import SegmentNames
from concord.shm.publisher import Publisher
from concord.shm.segments import DEV_SHM, create_store, unlink_store
from tests.helpers import wait_until

_counter = itertools.count()


@pytest.fixture
def names() -> Iterator[SegmentNames]:
    """A created store owned by this test (unlinked at teardown, leak-checked)."""
    n = SegmentNames(f"dr{os.getpid()}", f"s{next(_counter)}")
    create_store(n, ring_capacity=64, initial_bytes=4096)
    yield n
    unlink_store(n)
    assert [] == [f for f in os.listdir(DEV_SHM) if f.startswith(n.base)]


def node_config(tmp_path: Path) -> NodeConfig:
    return parse_config({"node": {"id": "n1", "data_dir": str(tmp_path / "d")}}, tmp_path)


def get(key: str, consistency: str) -> Request:
    return Request("get", 9, {"key": key, "consistency": consistency})


def test_door_reads_serve_from_the_store_once_attached(names: SegmentNames, tmp_path: Path) -> None:
    """eventual: the published value; leader without a lease and no other leader: HAND_OFF."""
    pub = Publisher.attach(names)
    try:
        record = KeyRecord("k", msgpack.packb("v"), 0, 3, 3, 1, 0)
        pub.publish([Change(ChangeType.PUT, Space.USER, "k", record, 3, 0)], 3, 3,
                    time.time_ns() // 1_000_000)
        reads = DoorReads(node_config(tmp_path), names)
        try:
            wait_until(lambda: reads.ready, 10, "the door's view was never attached")
            reply = reads.answer(get("k", "eventual"))
            assert isinstance(reply, bytes)
            assert {"id": 9, "ok": True, "value": "v"} == msgpack.unpackb(reply)
            assert Verdict.HAND_OFF is reads.answer(get("k", "leader"))
        finally:
            reads.close()
    finally:
        pub.close()


def test_door_reads_decline_every_read_when_the_store_cannot_be_attached(tmp_path: Path) -> None:
    reads = DoorReads(node_config(tmp_path), SegmentNames(f"dr{os.getpid()}", "absent"))
    try:
        wait_until(lambda: not reads.attaching, 10, "attach never ended")
        assert not reads.ready
        assert Verdict.DECLINE is reads.answer(get("k", "eventual"))
    finally:
        reads.close()


def test_door_reads_answer_a_strong_read_only_from_a_view_at_its_barrier_index(
        names: SegmentNames, tmp_path: Path) -> None:
    """Below the barrier's index: DECLINE (never the older value); at it: the value published there."""
    pub = Publisher.attach(names)
    try:
        now_ms = time.time_ns() // 1_000_000

        def put(value: str, index: int) -> None:
            record = KeyRecord("k", msgpack.packb(value), 0, 3, index, 1, 0)
            pub.publish([Change(ChangeType.PUT, Space.USER, "k", record, index, 0)], index, index,
                        now_ms)

        put("old", 3)
        reads = DoorReads(node_config(tmp_path), names)
        try:
            wait_until(lambda: reads.ready, 10, "the door's view was never attached")
            assert Verdict.DECLINE is reads.answer_strong(get("k", "strong"), 4)
            put("new", 4)
            reply = reads.answer_strong(get("k", "strong"), 4)
            assert isinstance(reply, bytes)
            assert {"id": 9, "ok": True, "value": "new"} == msgpack.unpackb(reply)
            # answer() itself still refuses strong reads: only the barrier path serves them.
            refused = reads.answer(get("k", "strong"))
            assert isinstance(refused, bytes) and b"invalid_request" in refused
        finally:
            reads.close()
    finally:
        pub.close()
