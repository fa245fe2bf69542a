"""Same-host shared-memory reads: a store published in this process, advertised by the fake node."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
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


# -- the cache of decoded values and the lock-free path of LocalStore.get ----------------------

def delete(key: str, rev: int) -> Change:
    return Change(ChangeType.DELETE, Space.USER, key, None, rev, 0)


def test_cached_leader_read_declined_when_lease_ends_or_role_changes(names: SegmentNames, pub: Publisher) -> None:
    """A leader read answered from the cache still needs the lease, checked after the read."""
    pub.set_status(1, names.node, Role.LEADER)
    pub.set_lease(time.monotonic_ns() + 60 * 10**9)
    pub.publish([put("cl:k", "v", 1)], 1, 1, now_ms())
    store = LocalStore.open(names)
    assert store is not None
    try:
        assert "v" == store.get("cl:k", "leader")
        assert "v" == store.get("cl:k", "leader")
        assert "cl:k" in store._values  # NB: the second read was a cache hit
        pub.set_lease(time.monotonic_ns() - 1)
        assert LocalStore.DECLINED is store.get("cl:k", "leader")
        assert "v" == store.get("cl:k", "eventual")
        pub.set_lease(time.monotonic_ns() + 60 * 10**9)
        assert "v" == store.get("cl:k", "leader")
        pub.set_status(2, "other", Role.FOLLOWER)  # the lease word alone is not enough
        assert LocalStore.DECLINED is store.get("cl:k", "leader")
    finally:
        store.close()


def test_cached_key_hidden_when_leader_time_passes_its_expiry(names: SegmentNames, pub: Publisher) -> None:
    """A key with an expiry is never answered from the cache: it disappears when it expires."""
    t = now_ms()
    pub.publish([put("ce:k", "v", 1, expires_at_ms=t + 60_000), put("ce:p", "plain", 1)], 1, 1, t)
    store = LocalStore.open(names)
    assert store is not None
    try:
        for _ in range(2):
            assert ("v", "plain") == (store.get("ce:k", "eventual"), store.get("ce:p", "eventual"))
        pub.publish([put("ce:other", 1, 2)], 2, 2, t + 120_000)  # ce:k itself does not change
        assert MISSING is store.get("ce:k", "eventual")
        assert "plain" == store.get("ce:p", "eventual")
    finally:
        store.close()


def test_cached_value_replaced_when_key_changes_or_view_rebuilds(names: SegmentNames, pub: Publisher) -> None:
    """A new value, a delete and a rebuild (a batch too big for the ring) each drop what was cached."""
    t = now_ms()
    pub.publish([put("ci:k", "v1", 1)], 1, 1, t)
    store = LocalStore.open(names)
    assert store is not None
    try:
        assert ["v1", "v1"] == [store.get("ci:k", "eventual") for _ in range(2)]
        pub.publish([put("ci:k", "v2", 2)], 2, 2, t)
        assert ["v2", "v2"] == [store.get("ci:k", "eventual") for _ in range(2)]
        pub.publish([delete("ci:k", 3)], 3, 3, t)
        assert MISSING is store.get("ci:k", "eventual")
        pub.publish([put("ci:k", "v4", 4)], 4, 4, t)
        assert ["v4", "v4"] == [store.get("ci:k", "eventual") for _ in range(2)]
        rebuilds = store._view.rebuilds
        # more changes than half the ring (64): published as a new lineage, read by a rebuild
        pub.publish([put("ci:k", "v5", 5)] + [put(f"ci:o{i}", i, 5) for i in range(40)], 5, 5, t)
        assert "v5" == store.get("ci:k", "eventual")
        assert store._view.rebuilds > rebuilds
    finally:
        store.close()


def test_mutable_values_never_shared_when_read_twice(advertised: FakeNode, pub: Publisher) -> None:
    """Lists and maps are decoded afresh on every read: a caller's change never reaches another."""
    pub.publish([put("cm:l", [1, 2], 1), put("cm:m", {"a": [1]}, 1), put("cm:b", b"xy", 1)], 1, 1, now_ms())
    with Client(advertised.endpoint, timeout_s=3.0) as c:
        for _ in range(2):
            got_l = c.get("cm:l", consistency="eventual")
            got_m = c.get("cm:m", consistency="eventual")
            assert ([1, 2], {"a": [1]}, b"xy") == (got_l, got_m, c.get("cm:b", consistency="eventual"))
            assert isinstance(got_l, list) and isinstance(got_m, dict)
            got_l.append(3)
            got_m["a"].append(2)


def test_invalid_keys_rejected_like_the_node_when_values_are_cached(advertised: FakeNode, pub: Publisher) -> None:
    """Every invalid key gets InvalidKeyError from the local path (none goes to the wire), cache or not."""
    pub.publish([put("ck:k", "local", 1)], 1, 1, now_ms())
    with Client(advertised.endpoint, timeout_s=3.0) as c:
        assert ["local", "local"] == [c.get("ck:k", consistency="eventual") for _ in range(2)]
        before = len(advertised.requests())
        for bad in ("", "x" * 1025, 5, None, ["ck:k"], b"ck:k", {"ck:k": 1}):
            for level in ("eventual", "leader"):
                with pytest.raises(InvalidKeyError):
                    c.get(bad, consistency=level)  # type: ignore[arg-type]
        assert [] == wire_gets(advertised, before)


def test_closed_client_raises_when_value_was_cached(advertised: FakeNode, pub: Publisher) -> None:
    """After close, a get fails with ShuttingDownError even for a key the cache held; the store declines."""
    from concord.errors import ShuttingDownError

    pub.publish([put("cc:k", "local", 1)], 1, 1, now_ms())
    c = Client(advertised.endpoint, timeout_s=3.0)
    assert ["local", "local"] == [c.get("cc:k", consistency="eventual") for _ in range(2)]
    store = c.local_store
    assert store is not None
    c.close()
    with pytest.raises(ShuttingDownError):
        c.get("cc:k", consistency="eventual")
    assert LocalStore.DECLINED is store.get("cc:k", "eventual")


def test_cached_read_told_to_telemetry_when_a_handler_listens(advertised: FakeNode, pub: Publisher) -> None:
    """A get answered from the cache still emits CLIENT_CALL (served "shm") while a handler listens."""
    from concord import telemetry

    pub.publish([put("ct:k", "local", 1)], 1, 1, now_ms())
    seen: list[tuple[object, ...]] = []
    with Client(advertised.endpoint, timeout_s=3.0) as c:
        assert ["local", "local"] == [c.get("ct:k", consistency="eventual") for _ in range(2)]
        telemetry.attach("ct", telemetry.CLIENT_CALL,
                         lambda e, m, md: seen.append((md["op"], md["result"], md["served"])))
        try:
            assert "local" == c.get("ct:k", consistency="eventual")
            assert None is c.get("ct:x", consistency="eventual", default=None)
        finally:
            telemetry.detach("ct")
    assert [("get", "ok", "shm"), ("get", "not_found", "shm")] == seen


@pytest.mark.timeout(120)
def test_threads_read_whole_values_when_view_catches_up_meanwhile(names: SegmentNames, pub: Publisher) -> None:
    """
    Threads sharing one store read while the writer publishes (replays, rebuilds, growth
    and compaction of the store): no read fails, a key that always exists is never
    absent, and no thread ever reads an older version of a key after a newer one.
    """
    keys = [f"ts:{i}" for i in range(8)]
    big = [f"ts:big{i}" for i in range(4)]  # more than INLINE_MAX bytes: never cached
    t = now_ms()

    def version(rev: int) -> list[Change]:
        return ([put(k, rev, rev) for k in keys] + [put(k, b"%08d" % rev * 64, rev) for k in big]
                + [put("ts:ttl", rev, rev, expires_at_ms=t + 3_600_000)])

    pub.publish(version(1), 1, 1, t)
    store = LocalStore.open(names)
    assert store is not None
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        last: dict[str, int] = {}
        try:
            while not stop.is_set():
                for k in [*keys, *big, "ts:ttl"]:
                    got = store.get(k, "eventual")
                    if got is MISSING:
                        errors.append(f"{k} absent")
                        continue
                    rev = int(got[:8]) if isinstance(got, bytes) else got
                    assert isinstance(rev, int)
                    if rev < last.get(k, 0):
                        errors.append(f"{k}: {rev} after {last[k]}")
                    last[k] = rev
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(repr(exc))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # NB: switch threads often, inside catch-ups too
    threads = [threading.Thread(target=reader) for _ in range(3)]
    try:
        for th in threads:
            th.start()
        for rev in range(2, 400):
            changes = version(rev)
            if rev % 50 == 0:  # a batch too big for the ring: a new lineage (rebuild)
                changes += [put(f"ts:o{i}", rev, rev) for i in range(40)]
            pub.publish(changes, rev, rev, t)
    finally:
        stop.set()
        for th in threads:
            th.join(30)
        sys.setswitchinterval(interval)
        view = store._view
        counts = (view.rebuilds, view.remaps, view.applied_changes)
        store.close()
    assert [] == errors[:5]
    assert counts[0] > 1 and counts[1] > 0 and counts[2] > 0, counts


def test_reader_waits_when_another_thread_is_catching_up(names: SegmentNames, pub: Publisher) -> None:
    """
    A get from another thread while a catch-up runs (here: between the two keys of one
    batch) waits for it to end: it never sees the batch half applied, even for a key
    whose old value is still cached at that moment.
    """
    t = now_ms()
    pub.publish([put("hw:a", 1, 1), put("hw:b", 1, 1)], 1, 1, t)
    store = LocalStore.open(names)
    assert store is not None
    got: list[tuple[object, object]] = []
    finished_during: list[bool] = []
    threads: list[threading.Thread] = []

    def read_both() -> None:
        got.append((store.get("hw:b", "eventual"), store.get("hw:a", "eventual")))

    def on_change(space: int, key: str, loc: object) -> None:
        if key == "hw:a" and not threads:
            threads.append(threading.Thread(target=read_both))
            threads[0].start()
            threads[0].join(0.3)  # NB: it must still be waiting for this catch-up
            finished_during.append(not threads[0].is_alive())

    try:
        assert [(1, 1), (1, 1)] == [(store.get("hw:b", "eventual"), store.get("hw:a", "eventual"))
                                    for _ in range(2)]
        store._view.subscribe(on_change, lambda: None)
        pub.publish([put("hw:a", 2, 2), put("hw:b", 2, 2)], 2, 2, t)
        assert 2 == store.get("hw:a", "eventual")  # this thread catches up (on_change runs in it)
        threads[0].join(10)
        assert [False] == finished_during
        assert [(2, 2)] == got
    finally:
        store.close()
