"""Same-host shared-memory reads: a store published in this process, advertised by the fake node."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from typing import Iterator

import msgpack
import pytest

from concord.client import Client, ValueWithMeta
from concord.client.local import LocalStore, shm_names
from concord.errors import InvalidKeyError, NotFoundError
from concord.kv.record import MISSING
from concord.kv.record import Change, ChangeType, KeyRecord, Space
from concord.raft.state import Role
from concord.shm.layout import FORMAT_VERSION, SegmentNames
from concord.shm.publisher import Publisher
from concord.shm.segments import DEV_SHM, create_store, unlink_store
from tests.client.fakes import FakeNode

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(60)]

_counter = itertools.count()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def put(key: str, value: object, rev: int, expires_at_ms: int = 0) -> Change:
    record = KeyRecord(key, msgpack.packb(value, use_bin_type=True), 0, rev, rev, 1, expires_at_ms)
    return Change(ChangeType.PUT, Space.USER, key, record, rev, 0)


@pytest.fixture
def names() -> Iterator[SegmentNames]:
    """A created store owned by this test (unlinked at teardown, leak-checked)."""
    n = SegmentNames(f"cl{os.getpid()}", f"s{next(_counter)}")
    create_store(n, ring_capacity=64, initial_bytes=4096)
    yield n
    unlink_store(n)
    assert [] == [f for f in os.listdir(DEV_SHM) if f.startswith(n.base)]


@pytest.fixture
def pub(names: SegmentNames) -> Iterator[Publisher]:
    p = Publisher.attach(names)
    yield p
    p.close()


@pytest.fixture
def advertised(a: FakeNode, names: SegmentNames) -> FakeNode:
    """Node a's status advertises the test store; its wire KV holds "wire" values."""
    a.mode(status_extra={"shm": {"node": names.node, "token": names.token, "version": FORMAT_VERSION}})
    return a


def wire_gets(node: FakeNode, before: int) -> list[str]:
    return [str(r["key"]) for r in node.requests()[before:] if r["op"] == "get"]


def test_eventual_read_served_from_shm_when_node_advertises_store(advertised: FakeNode, pub: Publisher) -> None:
    """An eventual get reads the local store, never the wire, and hides nothing it should not."""
    pub.publish([put("loc:k", "local", 3), put("loc:j", [1, 2], 3)], 3, 3, now_ms())
    with Client(advertised.endpoint, timeout_s=3.0) as c:
        c.put("loc:k", "wire")
        before = len(advertised.requests())
        assert "local" == c.get("loc:k", consistency="eventual")
        assert {"loc:k": "local", "loc:j": [1, 2]} == c.get_many(["loc:k", "loc:j", "loc:x"], consistency="eventual")
        assert ("loc:j", "loc:k") == c.keys(prefix="loc:", consistency="eventual").keys
        assert 2 == c.count(prefix="loc:", consistency="eventual")
        with pytest.raises(NotFoundError):
            c.get("loc:x", consistency="eventual")
        assert [] == wire_gets(advertised, before)
        assert c.local_store is not None and 5 == c.local_store.served


def test_leader_read_local_when_role_leader_and_lease_runs(
    advertised: FakeNode, pub: Publisher, names: SegmentNames
) -> None:
    """A leader read is local only while the store says LEADER and its read lease runs."""
    with Client(advertised.endpoint, timeout_s=3.0) as c:
        c.put("ld:k", "wire")
        pub.set_status(2, names.node, Role.FOLLOWER)
        pub.publish([put("ld:k", "local", 2)], 2, 2, now_ms())
        before = len(advertised.requests())
        assert "wire" == c.get("ld:k")  # follower: over the wire
        pub.set_status(2, names.node, Role.LEADER)
        assert "wire" == c.get("ld:k")  # leader without a lease: over the wire
        pub.set_lease(time.monotonic_ns() + 60 * 10**9)
        assert "local" == c.get("ld:k")
        assert ValueWithMeta("local", 2, 1, 2, None) == c.get("ld:k", meta=True)
        pub.set_lease(time.monotonic_ns() - 1)  # the lease ran out
        assert "wire" == c.get("ld:k")
        assert "wire" == c.get("ld:k", consistency="strong")
        assert ["ld:k", "ld:k", "ld:k", "ld:k"] == wire_gets(advertised, before)


def test_local_get_answers_like_read_when_served_or_declined(
    names: SegmentNames, pub: Publisher
) -> None:
    """LocalStore.get, the hot path of Client.get, gives read("get")'s answers and errors."""
    pub.publish([put("fg:k", {"a": 1}, 1), put("fg:nil", None, 1),
                 put("fg:gone", "x", 1, expires_at_ms=now_ms() - 1)], 1, 1, now_ms())
    store = LocalStore.open(names)
    assert store is not None
    try:
        assert {"a": 1} == store.get("fg:k", "eventual")
        assert {"ok": True, "value": {"a": 1}} == store.read("get", {"key": "fg:k", "consistency": "eventual"})
        assert None is store.get("fg:nil", "eventual")  # a stored nil is a value
        assert MISSING is store.get("fg:x", "eventual")
        assert MISSING is store.get("fg:gone", "eventual")  # expired
        with pytest.raises(InvalidKeyError):
            store.get("", "eventual")
        assert "invalid_key" == (store.read("get", {"key": "", "consistency": "eventual"}) or {}).get("error")
        assert LocalStore.DECLINED is store.get("fg:k", "leader")  # no lease
        assert LocalStore.DECLINED is store.get("fg:k", "strong")
        pub.set_status(1, names.node, Role.LEADER)
        pub.set_lease(time.monotonic_ns() + 60 * 10**9)
        assert {"a": 1} == store.get("fg:k", "leader")
        pub.set_status(2, "other", Role.FOLLOWER)  # the lease word alone is not enough
        assert LocalStore.DECLINED is store.get("fg:k", "leader")
    finally:
        store.close()
    assert LocalStore.DECLINED is store.get("fg:k", "eventual")


def test_client_get_default_and_errors_when_served_locally(advertised: FakeNode, pub: Publisher) -> None:
    """Client.get's local path: default for an absent key, the wire's error for a bad one."""
    pub.publish([put("cd:k", "local", 1)], 1, 1, now_ms())
    with Client(advertised.endpoint, timeout_s=3.0) as c:
        before = len(advertised.requests())
        assert "local" == c.get("cd:k", consistency="eventual")
        assert "dflt" == c.get("cd:x", consistency="eventual", default="dflt")
        with pytest.raises(InvalidKeyError):
            c.get("", consistency="eventual")
        assert [] == wire_gets(advertised, before)


def test_wire_used_when_store_not_on_this_host(a: FakeNode) -> None:
    """A store that does not exist here (another host's) is skipped; reads use the wire."""
    a.mode(status_extra={"shm": {"node": "elsewhere", "token": "nope", "version": FORMAT_VERSION}})
    with Client(a.endpoint, timeout_s=3.0) as c:
        c.put("nh:k", "wire")
        assert "wire" == c.get("nh:k", consistency="eventual")
        assert None is c.local_store


def test_wire_used_when_store_unlinked_after_attach(advertised: FakeNode, names: SegmentNames, pub: Publisher) -> None:
    """Once the supervisor unlinks the store (node gone) the client drops it and uses the wire."""
    pub.publish([put("gone:k", "local", 1)], 1, 1, now_ms())
    with Client(advertised.endpoint, timeout_s=3.0) as c:
        c.put("gone:k", "wire")
        assert "local" == c.get("gone:k", consistency="eventual")
        store = c.local_store
        assert store is not None
        unlink_store(names)
        store._next_check = 0.0  # NB: force the periodic existence check now
        assert "wire" == c.get("gone:k", consistency="eventual")
        assert None is c.local_store


def test_store_survives_when_attaching_process_exits(names: SegmentNames, pub: Publisher) -> None:
    """A fresh interpreter attaches through LocalStore and exits: the node's segments remain (no tracker unlink)."""
    pub.publish([put("rt:k", "v", 1)], 1, 1, now_ms())
    code = (
        "from concord.client.local import LocalStore\n"
        "from concord.shm.layout import FORMAT_VERSION, SegmentNames\n"
        f"s = LocalStore.open(SegmentNames({names.node!r}, {names.token!r}))\n"
        "assert s is not None\n"
        "r = s.read('get', {'key': 'rt:k', 'consistency': 'eventual'})\n"
        "assert r == {'ok': True, 'value': 'v'}, r\n"
        "s.close()\n"
    )
    # NB: no close() in the child's error path on purpose: even an abrupt exit must not unlink.
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30, cwd=os.getcwd())
    assert os.path.exists(os.path.join(DEV_SHM, names.ctl))
    assert os.path.exists(os.path.join(DEV_SHM, names.gen(0)))


def test_shm_names_rejected_when_advertisement_malformed() -> None:
    """Only a well-formed advertisement of this format version names a store."""
    assert SegmentNames("n1", "t1") == shm_names({"shm": {"node": "n1", "token": "t1", "version": FORMAT_VERSION}})
    assert None is shm_names({})
    assert None is shm_names({"shm": {"node": "n1", "token": "t1", "version": 1}})
    assert None is shm_names({"shm": {"node": "n/1", "token": "t1"}})
    assert None is shm_names({"shm": "concord-n1-t1-ctl"})


def test_local_store_declines_when_op_not_local(names: SegmentNames, pub: Publisher) -> None:
    """Strong reads and non-read ops are declined (None: use the wire)."""
    store = LocalStore.open(names)
    assert store is not None
    try:
        assert None is store.read("get", {"key": "k", "consistency": "strong"})
        assert None is store.read("put", {"key": "k", "value": 1, "consistency": "eventual"})
        assert {"ok": False, "error": "not_found", "leader": None} == {
            k: v for k, v in (store.read("get", {"key": "k", "consistency": "eventual"}) or {}).items()
            if k != "message"
        }
    finally:
        store.close()


def test_endpoint_local_when_loopback_or_ipc() -> None:
    """Only endpoints on this host are probed for a store."""
    from concord.client.local import is_local_endpoint

    assert is_local_endpoint("tcp://127.0.0.1:7400")
    assert is_local_endpoint("tcp://localhost:7400")
    assert is_local_endpoint("ipc:///tmp/concord-x.ipc")
    assert not is_local_endpoint("tcp://192.0.2.250:7400")  # TEST-NET-1, never this host
    assert not is_local_endpoint("tcp://name.invalid:7400")
    assert not is_local_endpoint("inproc://x")


def test_store_of_local_node_attached_when_leader_elsewhere(a: FakeNode, b: FakeNode, names: SegmentNames,
                                                            pub: Publisher) -> None:
    """The probe asks each local endpoint's status, so a local follower's store serves eventual reads."""
    pub.publish([put("fol:k", "local", 1)], 1, 1, now_ms())
    a.mode(redirect=b.endpoint, redirect_except=["status"],
           status_extra={"shm": {"node": names.node, "token": names.token, "version": FORMAT_VERSION}})
    with Client([a.endpoint], timeout_s=5.0, attempt_timeout_s=2.0) as c:
        c.put("fol:k", "wire")  # a follows the hint: b is the leader
        assert b.endpoint == c.leader
        assert "wire" == c.get("fol:k")  # leader read: a's store says FOLLOWER
        assert "local" == c.get("fol:k", consistency="eventual")
        assert c.local_store is not None


def test_wire_used_when_token_or_ns_given(advertised: FakeNode, pub: Publisher) -> None:
    """Auth and tenants are the node's to check: a client with token or ns never reads shared memory."""
    pub.publish([put("auth:k", "local", 1)], 1, 1, now_ms())
    for options in ({"token": "t"}, {"ns": "tenant"}):
        with Client(advertised.endpoint, timeout_s=3.0, **options) as c:  # type: ignore[arg-type]
            # The fake node's backend does not hold the key; shared memory does.
            assert None is c.get("auth:k", consistency="eventual", default=None)
            assert None is c.local_store


def test_store_detached_when_read_hits_corruption(
    names: SegmentNames, pub: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CorruptionError while reading detaches the view and declines (the wire takes over)."""
    from concord.errors import CorruptionError

    store = LocalStore.open(names)
    assert store is not None

    def corrupt(op: str, args: object) -> dict[str, object]:
        raise CorruptionError("record at offset 64 fails its checksum")

    monkeypatch.setattr(store._reader, "serve", corrupt)
    assert None is store.read("get", {"key": "k", "consistency": "eventual"})
    assert False is store.alive
    store.close()
