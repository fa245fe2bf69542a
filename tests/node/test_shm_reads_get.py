"""
The door's plain gets (concord.net.door_reads.plain_get, ShmReads.answer_get): answered
straight from the payload only where the full path (decode_request, ShmReads.answer)
would give the very same reply; None, so the full path decides, everywhere else.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from concord.auth.tokens import new_token
from concord.config import parse_config
from concord.errors import InvalidRequestError
from concord.kv import KvStateMachine, encode_command
from concord.net.door_reads import Verdict, plain_get
from concord.net.wire import OPS, Request, decode_request, ok_reply, ok_value_reply
from concord.node.shm_reads import ShmReads
from concord.raft.state import Role
from concord.shm.layout import SegmentNames
from concord.shm.publisher import Publisher
from concord.shm.segments import DEV_SHM, create_store, unlink_store
from concord.shm.view import INLINE_MAX, ShmView

_counter = itertools.count()

#: Values of every kind a client may store, small and big, and those kv compresses.
VALUES: list[object] = [
    "v", "", "é" * 40, b"\x00\xff", 0, -1, 1 << 63, -(1 << 63), 1.5, float("inf"), True,
    None, [1, "a", [None]], {"a": {"b": [1, 2]}}, {1: "int key", b"k": 2.0, None: False},
    "x" * (INLINE_MAX + 1), list(range(300)), "z" * 5000,
]


def test_plain_get_reads_exactly_the_plain_get_shapes_when_given_payloads() -> None:
    """The plain shapes give (id, key, level); any other field, type or op gives None."""
    def parts(obj: object) -> tuple[int, str, str] | None:
        return plain_get(msgpack.packb(obj))

    assert (7, "k", "leader") == parts({"op": "get", "id": 7, "key": "k"})
    assert (7, "k", "eventual") == parts({"key": "k", "consistency": "eventual", "id": 7, "op": "get"})
    assert (-3, "k", "leader") == parts({"op": "get", "id": -3, "key": "k", "consistency": "leader"})
    assert (7, "k", "strong") == parts({"op": "get", "id": 7, "key": "k", "consistency": "strong"})
    for obj in (
        {"op": "get", "id": 7, "key": "k", "consistency": "strong", "timeout_ms": 5},
        {"op": "get", "id": 7, "key": "k", "consistency": "bogus"},
        {"op": "get", "id": 7, "key": "k", "consistency": None},
        {"op": "get", "id": 7, "key": "k", "meta": True},
        {"op": "get", "id": 7, "key": "k", "token": "t"},
        {"op": "get", "id": 7, "key": "k", "consistency": "eventual", "timeout_ms": 5},
        {"op": "get", "id": True, "key": "k"},
        {"op": "get", "id": 1.0, "key": "k"},
        {"op": "get", "id": 7, "key": b"k"},
        {"op": "get", "id": 7, "key": 5},
        {"op": "get", "id": 7},
        {"op": b"get", "id": 7, "key": "k"},
        {"op": "get_many", "id": 7, "keys": ["k"]},
        {"op": "get", "key": "k", "consistency": "eventual"},
        {"op": "get", "id": 7, "key": "k", 1: 2},
        ["get", 7, "k"],
    ):
        assert None is parts(obj), obj
    good = msgpack.packb({"op": "get", "id": 7, "key": "k"})
    for payload in (good + b"\x00", good[:-1], b"", b"\xc1", msgpack.packb(msgpack.ExtType(1, b"x"))):
        assert None is plain_get(payload), payload


_FIELD = st.sampled_from(["op", "id", "key", "consistency", "meta", "token", "ns", "keys"])
_VALUE = st.one_of(st.sampled_from(["get", "eventual", "leader", "strong", "k", ""]),
                   st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1), st.booleans(),
                   st.none(), st.binary(max_size=3), st.text(max_size=3), st.floats(allow_nan=False))


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.dictionaries(_FIELD, _VALUE, max_size=5))
def test_plain_get_gives_the_request_decode_request_gives_when_given_random_maps(
        obj: dict[str, object]) -> None:
    """Whatever plain_get accepts, the full decoder accepts as the same get."""
    payload = msgpack.packb(obj)
    parts = plain_get(payload)
    if parts is None:
        return
    request = decode_request(payload, OPS)
    assert ("get", parts[0], parts[1], parts[2]) == (
        request.op, request.id, request.args["key"], request.consistency)
    assert set(request.args) <= {"key", "consistency"}
    assert (None, None, None, None, None) == (
        request.token, request.ns, request.timeout_ms, request.client_id, request.traceparent)


def test_ok_value_reply_is_ok_reply_when_given_a_stored_encoding() -> None:
    for value in VALUES:
        for request_id in (0, 1, -5, 1 << 40, (1 << 64) - 1):
            assert ok_reply(request_id, {"value": value}) == ok_value_reply(
                request_id, msgpack.packb(value, use_bin_type=True))


@pytest.fixture
def names() -> Iterator[SegmentNames]:
    """A created store owned by this test (unlinked at teardown, leak-checked)."""
    n = SegmentNames(f"drg{os.getpid()}", f"s{next(_counter)}")
    create_store(n, ring_capacity=256, initial_bytes=1 << 16)
    yield n
    unlink_store(n)
    assert [] == [f for f in os.listdir(DEV_SHM) if f.startswith(n.base)]


class Store:
    """A kv machine whose applied changes are published to the store, like a raft worker."""

    def __init__(self, names: SegmentNames) -> None:
        self.kv = KvStateMachine()
        self.pub = Publisher.attach(names)
        self.index = 0
        self.now_ms = time.time_ns() // 1_000_000

    def apply(self, op: str, args: dict[str, object]) -> None:
        self.index += 1
        applied = self.kv.apply(self.index, self.now_ms, encode_command(op, args))
        assert "error" not in applied.result, applied.result
        self.pub.publish(applied.changes, self.index, self.kv.revision, self.now_ms)

    def close(self) -> None:
        self.pub.close()


@pytest.fixture
def store(names: SegmentNames) -> Iterator[Store]:
    s = Store(names)
    yield s
    s.close()


def both(reads: ShmReads, request_id: int, key: str, consistency: str) -> tuple[bytes | None, object]:
    """(answer_get's reply, answer's reply) to the same plain get."""
    payload = msgpack.packb({"op": "get", "id": request_id, "key": key, "consistency": consistency})
    assert (request_id, key, consistency) == plain_get(payload)
    return reads.answer_get(request_id, key, consistency), reads.answer(decode_request(payload, OPS))


def reads_over(names: SegmentNames, tmp_path: Path, **sections: dict[str, object]) -> ShmReads:
    config = parse_config({"node": {"id": "n1", "data_dir": str(tmp_path / "d")}, **sections}, tmp_path)
    return ShmReads(config, ShmView.attach(names), rate_share=None)


def test_reads_go_to_the_raft_worker_when_nothing_is_published_yet(
        store: Store, names: SegmentNames, tmp_path: Path) -> None:
    """A store not yet published (a node's state is being built) has empty auth tables
    too: no read is served from it, with or without a token; once published, they are."""
    reads = reads_over(names, tmp_path)
    try:
        for consistency in ("eventual", "leader"):
            request = decode_request(msgpack.packb({"op": "get", "id": 1, "key": "k",
                                                    "consistency": consistency}))
            assert Verdict.HAND_OFF == reads.answer(request)
            assert None is reads.answer_get(1, "k", consistency)
        strong = decode_request(msgpack.packb({"op": "get", "id": 2, "key": "k",
                                               "consistency": "strong"}))
        assert Verdict.DECLINE == reads.answer_strong(strong, 0)
        store.apply("put", {"key": "k", "value": "v"})
        eventual = decode_request(msgpack.packb({"op": "get", "id": 3, "key": "k",
                                                 "consistency": "eventual"}))
        assert isinstance(reads.answer(eventual), bytes)
        assert isinstance(reads.answer_strong(strong, 1), bytes)
    finally:
        reads.close()


def test_answer_strong_get_gives_answer_strongs_reply_only_from_the_barriers_index(
        store: Store, names: SegmentNames, tmp_path: Path) -> None:
    """A plain strong get after its barrier: never from a view behind the barrier's
    index (None, so answer_strong declines it); from there, answer_strong's very reply."""
    reads = reads_over(names, tmp_path)
    try:
        store.apply("put", {"key": "k", "value": "old"})
        assert None is reads.answer_strong_get(1, "k", 2)  # the view cannot reach index 2
        store.apply("put", {"key": "k", "value": "new"})
        strong = decode_request(msgpack.packb({"op": "get", "id": 1, "key": "k",
                                               "consistency": "strong"}))
        reply = reads.answer_strong_get(1, "k", 2)
        assert reply is not None and reply == reads.answer_strong(strong, 2)
        assert "new" == msgpack.unpackb(reply)["value"]
        assert None is reads.answer_strong_get(2, "missing", 2)  # the full path's not_found
    finally:
        reads.close()


def test_answer_get_gives_answers_reply_or_none_when_given_every_kind_of_key(
        store: Store, names: SegmentNames, tmp_path: Path) -> None:
    """Found values (plain, big, compressed, with a TTL): the same bytes; the rest: None."""
    keys: list[str] = []
    for i, value in enumerate(VALUES):
        for extra in ({}, {"ttl": 3600}, {"compress": True}):
            key = f"k{i}-{len(keys)}"
            store.apply("put", {"key": key, "value": value, **extra})
            keys.append(key)
    store.apply("put", {"key": "gone", "value": 1, "ttl": 0.001})
    store.now_ms += 10  # "gone" expired at the published leader time
    store.apply("put", {"key": "clock", "value": 1})
    store.apply("put", {"key": "ключ", "value": 1})
    reads = reads_over(names, tmp_path)
    try:
        for key in keys:
            fast, full = both(reads, 11, key, "eventual")
            assert fast is not None and fast == full, key
        for key in ("absent", "gone", "ключ", "x" * 2000):
            fast, full = both(reads, 11, key, "eventual")
            assert fast is None or fast == full, key
            assert isinstance(full, bytes), key
        assert None is both(reads, 11, "absent", "eventual")[0]
        assert b"not_found" in both(reads, 1, "gone", "eventual")[1]  # type: ignore[operator]
    finally:
        reads.close()


def test_answer_get_serves_leader_reads_only_under_the_lease_when_the_lease_runs_out(
        store: Store, names: SegmentNames, tmp_path: Path) -> None:
    """leader: the value while this node leads with its lease; then None (answer refuses or hands off)."""
    store.apply("put", {"key": "k", "value": "v"})
    store.pub.set_status(1, "n1", Role.LEADER)
    store.pub.set_lease(time.monotonic_ns() + 60_000_000_000)
    reads = reads_over(names, tmp_path)
    try:
        fast, full = both(reads, 3, "k", "leader")
        assert fast is not None and fast == full
        store.pub.set_lease(0)
        fast, full = both(reads, 3, "k", "leader")
        assert None is fast and not isinstance(full, bytes)  # HAND_OFF: no other leader known
        store.pub.set_lease(time.monotonic_ns() + 60_000_000_000)
        store.pub.set_status(2, "n2", Role.FOLLOWER)
        fast, full = both(reads, 3, "k", "leader")
        assert None is fast and isinstance(full, bytes) and b"not_leader" in full
        assert fast is None and both(reads, 3, "k", "eventual")[0] is not None
    finally:
        reads.close()


def test_answer_get_leaves_every_read_to_the_full_path_when_auth_is_on(
        store: Store, names: SegmentNames, tmp_path: Path) -> None:
    """Auth required by the config, or active in the tables the read saw: None, and answer refuses."""
    store.apply("put", {"key": "k", "value": "v"})
    required = reads_over(names, tmp_path, auth={"enabled": True})
    try:
        fast, full = both(required, 4, "k", "eventual")
        assert None is fast and isinstance(full, bytes) and b"unauthorized" in full
    finally:
        required.close()
    reads = reads_over(names, tmp_path)
    try:
        assert both(reads, 4, "k", "eventual")[0] is not None
        _, admin = new_token()
        store.apply("auth_bootstrap", {"id": admin.token_id, "hash": admin.secret_hash})
        fast, full = both(reads, 4, "k", "eventual")  # the bootstrap is seen by this read
        assert None is fast and isinstance(full, bytes) and b"unauthorized" in full
    finally:
        reads.close()


def test_decode_request_refuses_what_plain_get_refuses_when_given_a_bad_request() -> None:
    """A sanity check of the oracle: the full path names the fault plain_get passes on."""
    with pytest.raises(InvalidRequestError):
        decode_request(msgpack.packb({"op": "get", "id": 1, "key": "k", "consistency": "bogus"}), OPS)
    assert isinstance(decode_request(msgpack.packb({"op": "get", "id": 1, "key": "k", "meta": True}), OPS),
                      Request)
