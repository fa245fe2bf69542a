"""The read path over shared memory answers exactly as the state machine does."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping

import pytest

from concord.errors import NotFoundError, RequestTimeoutError, TooManyItemsError
from concord.kv.commands import encode_request, expire_command
from concord.kv.config import KvConfig
from concord.kv.machine import KvStateMachine
from concord.shm.reader import Meta, Reader
from concord.shm.layout import SegmentNames
from concord.shm.publisher import Publisher
from concord.shm.view import ShmView


class Node:
    """A state machine whose applied changes are published to shm, as the raft worker does."""

    def __init__(self, names: SegmentNames) -> None:
        self.machine = KvStateMachine(KvConfig(compress_threshold_bytes=64))
        self.pub = Publisher.attach(names)
        self.index = 0
        self.ts = 1_000_000

    def write(self, request: Mapping[str, object], advance_ms: int = 1) -> Mapping[str, object]:
        self.index += 1
        self.ts += advance_ms
        applied = self.machine.apply(self.index, self.ts, encode_request(request))
        self.pub.publish(applied.changes, self.index, self.machine.revision, self.ts)
        return applied.result

    def expire_due(self) -> None:
        keys = self.machine.due_expirations(self.ts, 500)
        self.index += 1
        applied = self.machine.apply(self.index, self.ts, expire_command(keys))
        self.pub.publish(applied.changes, self.index, self.machine.revision, self.ts)


@pytest.fixture
def node(store: SegmentNames) -> Iterator[Node]:
    n = Node(store)
    yield n
    n.pub.close()


@pytest.fixture
def reader(store: SegmentNames, node: Node) -> Iterator[Reader]:
    view = ShmView.attach(store, mono_ns=lambda: 0)  # time is the entries' ts alone
    yield Reader(view, node.machine.config)
    view.close()


def _fill(node: Node) -> None:
    for i in range(30):
        node.write({"op": "put", "key": f"user:{i:02d}", "value": {"age": i % 7, "n": i}})
    node.write({"op": "put", "key": "cfg:big", "value": "x" * 500})  # compressed
    node.write({"op": "put", "key": "sess:a", "value": 1, "ttl": 0.05})
    node.write({"op": "put", "key": "sess:b", "value": 2, "ttl": 100})
    node.write({"op": "delete", "key": "user:03"})
    node.write({"op": "put_many", "items": [["bulk:1", [1, 2]], ["bulk:2", None]]})
    node.write({"op": "put", "key": "user:05", "value": {"age": 99}})


QUERIES: list[tuple[str, dict[str, object]]] = [
    ("get", {"key": "user:01"}),
    ("get", {"key": "user:01", "meta": True}),
    ("get", {"key": "user:03"}),
    ("get", {"key": "cfg:big", "meta": True}),
    ("get", {"key": "bulk:2"}),
    ("get", {"key": ""}),
    ("get_many", {"keys": ["user:01", "user:03", "sess:b", "nope"]}),
    ("get_many", {"keys": ["user:01", ""]}),
    ("get_many", {"keys": "user:01"}),
    ("get_many", {"keys": ["k"] * 501}),
    ("get", {"key": "user:01", "meta": False}),
    ("get", {"key": "user:01", "extra": 1}),
    ("get", {"key": 5}),
    ("get_with_ttl", {"key": "sess:b"}),
    ("ttl", {"key": "sess:b"}),
    ("ttl", {"key": "user:01"}),
    ("get_all", {"limit": 5}),
    ("get_all", {"limit": 5, "after": "user:10"}),
    ("keys", {"prefix": "user:1"}),
    ("keys", {"suffix": "1", "limit": 2, "offset": 1}),
    ("keys", {"pattern": "^(sess|bulk)"}),
    ("keys", {"range": ["sess:", "user:02"]}),
    ("query", {"where": ["eq", "age", 3]}),
    ("query", {"where": ["and", ["ge", "age", 2], ["lt", "n", 20]], "limit": 3}),
    ("count", {"prefix": "user:"}),
    ("count", {"contains": ":", "where": ["exists", "age"]}),
    ("list_indexes", {}),
    ("index_lookup", {"name": "by_age", "value": 3}),
    ("index_lookup", {"name": "by_age", "range": [5, None]}),
    ("keys", {"pattern": "("}),
]


def _same_answers(node: Node, reader: Reader) -> None:
    for op, args in QUERIES:
        assert node.machine.read(op, args, node.ts) == reader.serve(op, args), (op, args)


def test_serve_answers_like_state_machine_when_store_populated(node: Node, reader: Reader) -> None:
    """Every read op over shm gives the state machine's reply, errors included."""
    _fill(node)
    _same_answers(node, reader)


def test_serve_request_answers_like_state_machine_when_given_wire_maps(
    node: Node, reader: Reader
) -> None:
    """Whole wire requests (envelope fields included) get the state machine's replies."""
    _fill(node)
    for request in (
        {"op": "get", "id": 7, "key": "user:01", "consistency": "eventual"},
        {"op": "keys", "id": 8, "prefix": "sess:", "timeout_ms": 50},
        {"op": "put", "id": 9, "key": "x", "value": 1},
        {"id": 10},
    ):
        assert node.machine.read_request(request, node.ts) == reader.serve_request(request)


def test_indexes_rebuilt_from_system_records_when_created_and_dropped(
    node: Node, reader: Reader
) -> None:
    """Secondary indexes follow create/drop and later writes, as in the state machine."""
    _fill(node)
    assert {"indexes": []} == reader.serve("list_indexes", {})
    node.write({"op": "create_index", "name": "by_age", "field": "age"})
    _same_answers(node, reader)
    node.write({"op": "put", "key": "user:07", "value": {"age": 3}})
    node.write({"op": "delete", "key": "user:10"})
    _same_answers(node, reader)
    found = reader.serve("index_lookup", {"name": "by_age", "value": 3})["items"]
    assert 3 == len(found)  # type: ignore[arg-type]
    node.write({"op": "drop_index", "name": "by_age"})
    _same_answers(node, reader)


def test_indexes_survive_when_view_rebuilds(node: Node, reader: Reader) -> None:
    """After a compaction (view rebuild) the reader's indexes are rebuilt."""
    _fill(node)
    node.write({"op": "create_index", "name": "by_age", "field": "age"})
    node.pub.compact()
    _same_answers(node, reader)
    assert 2 == reader.view.rebuilds


def test_expired_key_hidden_when_leader_time_passes(node: Node, reader: Reader) -> None:
    """A key is hidden once the published leader time reaches its expiry, before EXPIRE."""
    _fill(node)
    assert 1 == reader.get("sess:a")
    node.write({"op": "put", "key": "tick", "value": 0}, advance_ms=100)
    with pytest.raises(NotFoundError):
        reader.get("sess:a")
    assert "sess:a" not in reader.keys({"prefix": "sess:"})["keys"]  # type: ignore[operator]
    _same_answers(node, reader)
    node.expire_due()
    assert node.machine.get_record("sess:a") is None
    _same_answers(node, reader)


def test_typed_reads_match_wire_reads_when_key_present(node: Node, reader: Reader) -> None:
    """The fast paths return what the wire ops return."""
    _fill(node)
    assert {"age": 1, "n": 1} == reader.get("user:01")
    assert "x" * 500 == reader.get("cfg:big")
    assert {"user:01": {"age": 1, "n": 1}, "bulk:2": None} == reader.get_many(
        ["user:01", "user:03", "bulk:2"]
    )
    value, ttl = reader.get_with_ttl("sess:b")
    assert (2, node.machine.read("ttl", {"key": "sess:b"}, node.ts)["ttl"]) == (value, ttl)
    rec = node.machine.get_record("user:05")
    assert rec is not None
    assert Meta(rec.mod_revision, rec.version, rec.create_revision, None) == reader.meta("user:05")
    assert reader.ttl("user:01") is None
    assert 29 == reader.count({"prefix": "user:"})  # user:03 was deleted
    with pytest.raises(NotFoundError):
        reader.get_encoded("user:03")
    with pytest.raises(TooManyItemsError):
        reader.get_many([f"k{i}" for i in range(501)])


def test_wait_applied_returns_at_once_when_already_applied(node: Node, reader: Reader) -> None:
    """A strong read whose read index is applied does not wait."""
    node.write({"op": "put", "key": "a", "value": 1})
    assert 0.0 == reader.wait_applied(node.index, timeout_s=1.0)
    assert 0 == reader.wait_stats().waits


def test_wait_applied_waits_when_index_applied_later(node: Node, reader: Reader) -> None:
    """A strong read waits until the writer publishes its read index, and says how long."""
    target = node.index + 1
    timer = threading.Timer(0.02, node.write, args=({"op": "put", "key": "late", "value": 7},))
    timer.start()
    try:
        waited = reader.wait_applied(target, timeout_s=10.0)
    finally:
        timer.join()
    assert waited > 0.0
    assert 7 == reader.get("late")
    stats = reader.wait_stats()
    assert (1, waited, waited) == (stats.waits, stats.total_wait_s, stats.max_wait_s)


def test_wait_applied_times_out_when_index_not_reached(node: Node, reader: Reader) -> None:
    """A strong read fails with a timeout if the applied index never gets there."""
    with pytest.raises(RequestTimeoutError):
        reader.wait_applied(node.index + 1, timeout_s=0.01)
