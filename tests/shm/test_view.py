"""Publishing and lookups: values, deletes, TTL, growth, compaction, ring overflow, header."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator

import msgpack
import pytest

from concord.errors import CorruptionError
from concord.kv.record import Change, ChangeType, KeyRecord, RecordFlags, Space
from concord.raft.state import Role
from concord.shm.layout import (
    GEN_HEADER_SIZE,
    W_MAX_GEN,
    SegmentNames,
    create_segment,
    open_segment,
)
from concord.shm.segments import store_segments
from concord.shm.publisher import Publisher
from concord.shm.view import INLINE_MAX, MISSING, NodeView, ShmView

from .helpers import delete, put, rec


class FakeMonotonicClock:
    """This host's CLOCK_MONOTONIC (ns) as writer and readers see it; tests move it."""

    def __init__(self) -> None:
        self.now_ns = 10**12

    def __call__(self) -> int:
        return self.now_ns

    def advance_ms(self, ms: int) -> None:
        self.now_ns += ms * 1_000_000


@pytest.fixture
def mono() -> FakeMonotonicClock:
    return FakeMonotonicClock()


@pytest.fixture
def pub(store: SegmentNames, mono: FakeMonotonicClock) -> Iterator[Publisher]:
    p = Publisher.attach(store, mono_ns=mono)
    yield p
    p.close()


@pytest.fixture(params=[ShmView, NodeView], ids=["client_view", "node_view"])
def view(
    request: pytest.FixtureRequest, store: SegmentNames, pub: Publisher, mono: FakeMonotonicClock
) -> Iterator[ShmView]:
    """Every view test runs against both kinds: with small values inline, and without."""
    kind: type[ShmView] = request.param
    v = kind.attach(store, mono_ns=mono)
    yield v
    v.close()


def test_get_returns_value_when_published(pub: Publisher, view: ShmView) -> None:
    """A published PUT is visible with its stored bytes and decoded value."""
    pub.publish([put("a", {"x": 1}, 5)], 5, 5, 1000)
    assert msgpack.packb({"x": 1}) == view.get_encoded("a")
    assert {"x": 1} == view.get_value("a")
    assert rec("a", {"x": 1}, 5) == view.record("a")


def test_get_returns_missing_when_never_put(view: ShmView) -> None:
    """Absent keys are None (bytes) or MISSING (values), distinct from a stored nil."""
    assert view.get_encoded("nope") is None
    assert MISSING is view.get_value("nope")


def test_get_decodes_map_when_keys_are_not_strings(pub: Publisher, view: ShmView) -> None:
    """Maps with integer keys decode (msgpack values may have any scalar keys)."""
    pub.publish([put("m", {1: "a", "b": 2}, 1)], 1, 1, 0)
    assert {1: "a", "b": 2} == view.get_value("m")
    assert [{1: "a", "b": 2}] == view.get_many_values(["m"])


def test_get_returns_nil_when_value_is_nil(pub: Publisher, view: ShmView) -> None:
    """A stored nil decodes to None, not MISSING."""
    pub.publish([put("n", None, 1)], 1, 1, 0)
    assert view.get_value("n") is None


def test_get_returns_latest_when_overwritten(pub: Publisher, view: ShmView) -> None:
    """A later PUT of the same key replaces the earlier one."""
    pub.publish([put("a", 1, 1)], 1, 1, 0)
    assert 1 == view.get_value("a")
    pub.publish([put("a", 2, 2, version=2)], 2, 2, 0)
    assert 2 == view.get_value("a")
    assert 2 == view.record("a").version  # type: ignore[union-attr]


def test_get_returns_missing_when_deleted(pub: Publisher, view: ShmView) -> None:
    """DELETE and EXPIRE remove the key; a delete of an absent key is ignored."""
    pub.publish([put("a", 1, 1), put("b", 2, 1)], 1, 1, 0)
    pub.publish(
        [delete("a", 2), Change(ChangeType.EXPIRE, Space.USER, "b", None, 2, 0), delete("zz", 2)],
        2, 2, 0,
    )
    assert MISSING is view.get_value("a")
    assert MISSING is view.get_value("b")
    assert [] == list(view.keys())


def test_get_hides_key_when_leader_time_passes_expiry(pub: Publisher, view: ShmView) -> None:
    """Keys whose expires_at_ms <= the published leader time are hidden."""
    pub.publish([put("t", "v", 1, expires_at_ms=2000), put("p", "w", 1)], 1, 1, 1999)
    assert "v" == view.get_value("t")
    assert [b"\xa1v", b"\xa1w"] == view.get_many_encoded(["t", "p"])
    pub.publish([], 2, 1, 2000)
    assert MISSING is view.get_value("t")
    assert view.get_encoded("t") is None
    assert view.record("t") is None
    assert [None, b"\xa1w"] == view.get_many_encoded(["t", "p"])
    assert [MISSING, "w"] == view.get_many_values(["t", "p"])


def test_get_hides_key_when_cluster_time_passes_expiry_on_idle_store(
    pub: Publisher, view: ShmView, mono: FakeMonotonicClock
) -> None:
    """
    With no new entry, cluster time runs on from the last entry's leader time at the
    host's monotonic rate and expires a key on time (as the raft worker's reads do).
    """
    pub.publish([put("t", "v", 1, expires_at_ms=2000)], 1, 1, 1000)
    mono.advance_ms(999)
    assert "v" == view.get_value("t")
    assert 1999 == view.now_ms() == pub.cluster_now_ms()
    mono.advance_ms(1)
    assert MISSING is view.get_value("t")
    assert view.record("t") is None


def test_ttl_key_served_when_host_wall_clock_is_an_hour_ahead(
    store: SegmentNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Regression (issue 13): reads evaluated TTLs at max(leader time, this host's wall
    clock), so a node whose clock was an hour ahead hid a key with an hour to live. With
    the real monotonic clock and the wall clock an hour ahead, the key is served and its
    cluster time is the leader's.
    """
    ahead = time.time_ns() + 3600 * 10**9
    monkeypatch.setattr(time, "time_ns", lambda: ahead)
    monkeypatch.setattr(time, "time", lambda: ahead / 1e9)
    leader_time = (ahead - 3600 * 10**9) // 1_000_000
    pub = Publisher.attach(store)
    try:
        pub.publish([put("t", "v", 1, expires_at_ms=leader_time + 1_800_000)], 1, 1, leader_time)
        with ShmView.attach(store) as view:
            assert "v" == view.get_value("t")
            assert leader_time <= view.now_ms() < leader_time + 60_000
            assert leader_time <= pub.cluster_now_ms() < leader_time + 60_000
    finally:
        pub.close()


def test_leader_time_wins_when_it_is_ahead_of_the_extrapolation(
    pub: Publisher, view: ShmView, mono: FakeMonotonicClock
) -> None:
    """A new entry whose leader time is ahead moves cluster time forward at once."""
    pub.publish([put("t", "v", 1, expires_at_ms=2000)], 1, 1, 1000)
    mono.advance_ms(10)
    pub.publish([], 2, 1, 2500)
    assert MISSING is view.get_value("t")
    assert 2500 == view.now_ms()


def test_cluster_time_never_goes_backwards_when_leader_time_stalls_or_drops(
    store: SegmentNames, mono: FakeMonotonicClock
) -> None:
    """
    A leader whose wall clock is behind stamps max(previous, wall), and a restarted
    writer may republish an older state: cluster time keeps running from the furthest
    point, for this view, a view attached later (another process) and the writer.
    """
    pub = Publisher.attach(store, mono_ns=mono)
    view = ShmView.attach(store, mono_ns=mono)
    pub.publish([put("t", "v", 1, expires_at_ms=1500)], 1, 1, 1000)
    mono.advance_ms(500)
    assert MISSING is view.get_value("t")  # 1500: hidden
    pub.publish([], 2, 1, 1000)  # leader time stalled
    mono.advance_ms(100)
    pub.publish([], 3, 1, 1050)  # behind the extrapolation
    assert MISSING is view.get_value("t")
    assert 1600 == view.now_ms() == pub.cluster_now_ms()
    with ShmView.attach(store, mono_ns=mono) as later:
        assert MISSING is later.get_value("t")
        assert 1600 == later.now_ms()
    pub.close()
    restarted = Publisher.attach(store, mono_ns=mono)
    try:
        restarted.publish([], 1, 1, 900)  # recovered from an older state
        mono.advance_ms(5)
        assert 1605 == view.now_ms() == restarted.cluster_now_ms()
        assert MISSING is view.get_value("t")
    finally:
        restarted.close()
        view.close()


def test_ttl_cleared_when_key_put_again_without_ttl(pub: Publisher, view: ShmView) -> None:
    """A PUT without TTL after one with TTL makes the key permanent."""
    pub.publish([put("t", "v", 1, expires_at_ms=10)], 1, 1, 0)
    pub.publish([put("t", "w", 2, version=2)], 2, 2, 50)
    assert "w" == view.get_value("t")
    assert 0 == view.expires_at_ms("t")


def test_get_decompresses_when_record_compressed(pub: Publisher, view: ShmView) -> None:
    """Compressed records are returned as their msgpack bytes."""
    packed = msgpack.packb("z" * 5000)
    r = KeyRecord("c", zlib.compress(packed, 6), int(RecordFlags.COMPRESSED), 1, 1, 1)
    pub.publish([Change(ChangeType.PUT, Space.USER, "c", r, 1, 0)], 1, 1, 0)
    assert packed == view.get_encoded("c")
    assert "z" * 5000 == view.get_value("c")
    assert r == view.record("c")


def test_spaces_are_separate_when_same_key(pub: Publisher, view: ShmView) -> None:
    """USER and SYSTEM keys with one name do not collide."""
    pub.publish([put("k", "user", 1), put("k", "sys", 1, space=Space.SYSTEM)], 1, 1, 0)
    assert "user" == view.get_value("k")
    assert msgpack.packb("sys") == view.get_encoded_in(Space.SYSTEM, "k")
    pub.publish([delete("k", 2, space=Space.SYSTEM)], 2, 2, 0)
    assert "user" == view.get_value("k")
    assert view.get_encoded_in(Space.SYSTEM, "k") is None


def test_values_survive_when_store_grows(pub: Publisher, view: ShmView) -> None:
    """
    The writer grows the live segment in place (same generation, same offsets, no copy):
    readers map it again once the arena passes their mapping, no rebuild.
    """
    capacity = pub.stats().capacity_bytes
    for i in range(300):
        pub.publish([put(f"k{i}", i, i + 1)], i + 1, i + 1, 0)
        assert i == view.get_value(f"k{i}")
    assert 0 == pub.stats().generation
    assert pub.stats().capacity_bytes >= 2 * capacity
    assert 1 == view.rebuilds  # the initial attach only
    assert view.remaps >= 2
    assert list(range(300)) == view.get_many_values([f"k{i}" for i in range(300)])


def test_values_agree_when_a_key_moves_between_small_big_and_special(
    pub: Publisher, view: ShmView
) -> None:
    """
    Small plain values are held inline by the view, big ones sliced from the mapping,
    TTL ones kept apart: a key moving between the three reads right through the ring, a
    directory load and a scan, and its record always matches its bytes.
    """
    big = "b" * (INLINE_MAX + 1)
    edge = "e" * (INLINE_MAX - 2)  # a 2-byte msgpack str8 header: exactly INLINE_MAX bytes
    assert INLINE_MAX == len(msgpack.packb(edge))
    steps: list[tuple[object, int]] = [
        ("small", 0), (big, 0), (edge, 0), ("ttl", 10**15), (big, 10**15), ("small again", 0),
    ]

    def check(v: ShmView, value: object, expires: int, version: int) -> None:
        raw = msgpack.packb(value)
        assert raw == v.get_encoded("k")
        assert value == v.get_value("k")
        assert [raw, None] == v.get_many_encoded(["k", "absent"])
        record = v.record("k")
        assert record is not None and (raw, version, expires) == (
            record.value, record.version, record.expires_at_ms
        )

    for version, (value, expires) in enumerate(steps, start=1):
        pub.publish([put("k", value, version, version, expires)], version, version, 0)
        check(view, value, expires, version)
        pub.publish([put("other", version, version)], version, version, 0)
        pub.compact()  # the next read loads the directory
        check(view, value, expires, version)
        fresh = type(view).attach(view.names)  # a directory load, or after growth a scan
        check(fresh, value, expires, version)
        fresh.close()
    pub.publish([delete("k", 99)], 99, 99, 0)
    assert None is view.get_encoded("k") and MISSING is view.get_value("k")
    assert None is view.record("k")


def test_node_view_holds_no_value_bytes_when_replayed_loaded_or_scanned(
    store: SegmentNames, pub: Publisher
) -> None:
    """
    The front door's and read workers' view (NodeView) copies no values into its index,
    whichever way it got its state: the ring, a directory load, a scan. Values still
    read right, compressed and TTL ones too.
    """
    node = NodeView.attach(store)
    values = {f"k{i}": "v" * (i % 40) for i in range(30)}
    pub.publish([put(k, v, 1) for k, v in values.items()], 1, 1, 0)
    pub.publish([put("ttl", "t", 2, expires_at_ms=10**15)], 2, 2, 0)

    def check(v: ShmView) -> None:
        assert values == dict(zip(values, v.get_many_values(list(values))))
        assert "t" == v.get_value("ttl") and MISSING is v.get_value("absent")
        assert [msgpack.packb(values["k3"]), None] == v.get_many_encoded(["k3", "absent"])
        assert all(not idx.small for idx in v._spaces)

    check(node)  # through the ring
    pub.compact()
    check(node)  # a directory load
    assert 1 == node.directory_loads
    for i in range(3, 100):  # more than the ring's 64 slots since the directory
        pub.publish([put("k0", "v" * (i % 40), i)], i, i, 0)
    values["k0"] = "v" * (99 % 40)
    scanned = NodeView.attach(store)
    check(scanned)  # a scan
    assert 0 == scanned.directory_loads
    scanned.close()
    node.close()


def test_view_rebuilds_when_compacted(pub: Publisher, view: ShmView) -> None:
    """Compaction drops dead records; readers rebuild from a scan and see the same data."""
    for i in range(60):  # fewer than the 64 ring slots: the view keeps up
        pub.publish([put(f"k{i % 10}", i, i + 1, version=i // 10 + 1)], i + 1, i + 1, 0)
    used_before = pub.stats().used_bytes
    assert 59 == view.get_value("k9")
    assert 1 == view.rebuilds
    pub.compact()
    stats = pub.stats()
    assert stats.used_bytes - stats.directory_bytes < used_before / 5
    assert [50 + i for i in range(10)] == view.get_many_values([f"k{i}" for i in range(10)])
    assert 2 == view.rebuilds
    assert pub.stats().lineage_gen == view.status().lineage_gen


def test_view_loads_directory_when_rebuilding_after_compaction(
    pub: Publisher, view: ShmView
) -> None:
    """After a compaction readers load the directory instead of parsing every record."""
    pub.publish([put(f"k{i}", i, 1, expires_at_ms=10**9 if i % 2 else 0) for i in range(20)]
                + [put("s", "sys", 1, space=Space.SYSTEM)], 1, 1, 0)
    pub.publish([delete("k0", 2)], 2, 2, 0)
    pub.compact()
    pub.publish([put("k1", "new", 3, version=2)], 3, 3, 0)
    assert ["new", 2, MISSING] == view.get_many_values(["k1", "k2", "k0"])
    assert 1 == view.directory_loads
    assert 10**9 == view.expires_at_ms("k3")
    assert 0 == view.expires_at_ms("k2")
    assert msgpack.packb("sys") == view.get_encoded_in(Space.SYSTEM, "s")
    fresh = type(view).attach(view.names)
    assert {f"k{i}" for i in range(1, 20)} == set(fresh.keys())
    assert 1 == fresh.directory_loads
    fresh.close()


def test_rebuild_settles_without_retry_when_writer_compacts_during_it(
    pub: Publisher, view: ShmView
) -> None:
    """
    A compaction that lands while a reader loads the previous one's directory does not
    make it retry: it ends at the status it started from (published during the call),
    and the next lookup catches up with the new lineage.
    """
    pub.publish([put(f"k{i}", i, 1) for i in range(10)], 1, 1, 0)
    pub.compact()
    pub.publish([put("k1", "new", 2, version=2)], 2, 2, 0)
    racing: list[bool] = []

    def compact_again() -> None:
        if not racing:
            racing.append(True)
            pub.publish([put("k2", "newer", 3, version=2)], 3, 3, 0)
            pub.compact()

    view.subscribe(lambda space, key, loc: None, compact_again)
    assert "new" == view.get_value("k1")
    assert 2 == view.synced_status().revision  # the status the call started at
    assert (1, 0, 0) == (view.settled_behind, view.retries, view.lineage_races)
    assert "newer" == view.get_value("k2")  # the next lookup catches up
    assert 3 == view.synced_status().revision
    assert (1, 0, 0) == (view.settled_behind, view.retries, view.max_retries)


def test_view_scans_when_directory_is_more_than_a_ring_behind(
    pub: Publisher, view: ShmView
) -> None:
    """A directory older than the ring can bridge is not used: the view scans."""
    pub.publish([put(f"k{i}", i, 1) for i in range(5)], 1, 1, 0)
    pub.compact()
    for i in range(2, 100):  # more than the 64 ring slots since the directory
        pub.publish([put(f"k{i % 7}", i, i)], i, i, 0)
    assert 99 == view.get_value("k1")
    assert 0 == view.directory_loads
    assert 2 == view.rebuilds


def test_maybe_compact_acts_when_mostly_dead(pub: Publisher) -> None:
    """maybe_compact compacts only past the dead-ratio threshold."""
    pub.publish([put("a", "x" * 100, 1)], 1, 1, 0)
    assert not pub.maybe_compact(min_used_bytes=0)
    for i in range(2, 5):
        pub.publish([put("a", "x" * 100, i)], i, i, 0)
    assert pub.maybe_compact(min_used_bytes=0)
    stats = pub.stats()
    assert stats.used_bytes == stats.live_bytes + stats.directory_bytes
    assert not pub.maybe_compact(min_used_bytes=0)


def test_view_rebuilds_when_ring_overflows(pub: Publisher, view: ShmView) -> None:
    """A reader more than ring_capacity changes behind rebuilds from a scan."""
    pub.publish([put("gone", 0, 1)], 1, 1, 0)
    assert 0 == view.get_value("gone")
    for i in range(2, 200):  # ring has 64 slots
        pub.publish([put(f"k{i % 50}", i, i)], i, i, 0)
    pub.publish([delete("gone", 200)], 200, 200, 0)
    assert MISSING is view.get_value("gone")
    assert 2 == view.rebuilds
    assert {f"k{i}" for i in range(50)} == set(view.keys())
    assert 199 == view.get_value("k49")


def test_publish_is_applied_whole_when_larger_than_ring(pub: Publisher, view: ShmView) -> None:
    """A batch too big for the ring is published as a new lineage, atomically."""
    pub.publish([put("old", 1, 1)], 1, 1, 0)
    assert 1 == view.get_value("old")
    big = [put(f"b{i}", i, 2) for i in range(40)] + [delete("old", 2)]
    pub.publish(big, 2, 2, 0)
    assert MISSING is view.get_value("old")
    assert list(range(40)) == view.get_many_values([f"b{i}" for i in range(40)])
    assert 2 == view.status().applied_index


def test_header_publishes_status_when_set(pub: Publisher, view: ShmView) -> None:
    """applied index, revision, term, leader, role and leader time reach readers."""
    pub.set_status(7, "n3", Role.FOLLOWER)
    pub.publish([put("a", 1, 40)], 42, 40, 123456789)
    st = view.status()
    assert (42, 40, 7, "n3", Role.FOLLOWER, 123456789) == (
        st.applied_index, st.revision, st.term, st.leader_id, st.role, st.leader_time_ms
    )
    assert 123456789 == view.leader_time_ms
    assert 42 == view.applied_index_now()
    pub.set_status(8, None, Role.CANDIDATE)
    st = view.current_status()
    assert (8, None, Role.CANDIDATE) == (st.term, st.leader_id, st.role)


def test_sorted_keys_kept_current_when_changed(pub: Publisher, view: ShmView) -> None:
    """The sorted key index follows puts and deletes after it was built."""
    pub.publish([put("b", 1, 1), put("a", 1, 1)], 1, 1, 0)
    view.sync()
    assert ["a", "b"] == list(view.sorted_keys())
    pub.publish([put("c", 1, 2), delete("a", 2), put("b", 2, 2)], 2, 2, 0)
    view.sync()
    assert ["b", "c"] == list(view.sorted_keys())
    assert ["b", "c"] == [k for k, _ in view.iter_live()]


def test_listeners_see_changes_when_subscribed(pub: Publisher, view: ShmView) -> None:
    """Subscribers get every ingested put and removal, and a reset on rebuild."""
    seen: list[tuple[int, str, bool]] = []
    resets: list[int] = []
    view.subscribe(lambda s, k, loc: seen.append((s, k, loc is not None)), lambda: resets.append(1))
    pub.publish([put("a", 1, 1), put("x", 1, 1, space=Space.SYSTEM)], 1, 1, 0)
    pub.publish([delete("a", 2)], 2, 2, 0)
    view.sync()
    assert [(0, "a", True), (1, "x", True), (0, "a", False)] == seen
    pub.compact()
    view.sync()
    assert [1] == resets


def test_new_writer_continues_when_previous_writer_closed(store: SegmentNames) -> None:
    """A restarted writer recovers the published state and keeps publishing."""
    first = Publisher.attach(store)
    first.publish([put("a", 1, 1), put("b", 1, 1), put("z", 1, 1)], 1, 1, 0)
    first.compact()  # a directory in the middle of the arena
    first.publish([delete("a", 2), put("b", 2, 2, version=2), delete("z", 2)], 2, 2, 0)
    first.close()
    second = Publisher.attach(store)
    assert 1 == second.stats().live_records
    second.publish([put("c", 3, 3)], 3, 3, 0)
    view = ShmView.attach(store)
    assert [MISSING, 2, 3] == view.get_many_values(["a", "b", "c"])
    view.close()
    second.close()


def test_new_writer_unlinks_orphans_when_previous_writer_died_mid_compaction(
    store: SegmentNames,
) -> None:
    """Generations a dead writer created but never published (a compaction target) are
    unlinked on attach."""
    first = Publisher.attach(store)
    first.publish([put("a", 1, 1)], 1, 1, 0)
    first.close()
    ctl = open_segment(store.ctl, writable=True)
    words = memoryview(ctl).cast("Q")
    words[W_MAX_GEN] = 3  # as a new lineage does before creating the segment
    words.release()
    ctl.close()
    create_segment(store.gen(3), 4096).close()
    second = Publisher.attach(store)
    assert [store.ctl, store.gen(0)] == store_segments(store)
    second.publish([put("b", 2, 2)], 2, 2, 0)
    assert 0 == second.stats().generation
    view = ShmView.attach(store)
    assert [1, 2] == view.get_many_values(["a", "b"])
    view.close()
    second.close()


def test_reset_replaces_state_when_called(pub: Publisher, view: ShmView) -> None:
    """reset() publishes a whole new state; readers rebuild to exactly it."""
    pub.publish([put("a", 1, 1)], 1, 1, 0)
    assert 1 == view.get_value("a")
    pub.reset([(Space.USER, iter([rec("b", 2, 9)])), (Space.SYSTEM, [rec("s", 3, 9)])], 9, 9, 77)
    assert MISSING is view.get_value("a")
    assert 2 == view.get_value("b")
    assert 9 == view.status().applied_index


def test_attach_raises_when_record_corrupt(store: SegmentNames, pub: Publisher) -> None:
    """A record whose bytes no longer match its checksum stops the reader loudly."""
    pub.publish([put("a", "value", 1)], 1, 1, 0)
    mm = open_segment(store.gen(0), writable=True)
    try:
        mm[GEN_HEADER_SIZE + 52] ^= 0xFF  # inside the value
    finally:
        mm.close()
    with pytest.raises(CorruptionError):
        ShmView.attach(store)


def test_publish_rejects_batch_when_key_longer_than_format_allows(
    pub: Publisher, view: ShmView
) -> None:
    """A key over 65535 UTF-8 bytes fails the whole batch before anything changes."""
    with pytest.raises(ValueError):
        pub.publish([put("ok", 1, 1), put("k" * 70000, 1, 1)], 1, 1, 0)
    assert 0 == pub.stats().live_records
    pub.publish([put("b", 2, 2)], 2, 2, 0)
    assert [MISSING, 2] == view.get_many_values(["ok", "b"])


def test_attach_raises_when_store_missing(names: SegmentNames) -> None:
    """Attaching to nothing is a clear FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        ShmView.attach(names)


def test_reset_publishes_every_kind_of_record_when_given_in_bulk(
    pub: Publisher, view: ShmView
) -> None:
    """reset() of plain, TTL and compressed user records, a keyspace given twice and a
    duplicate key (the last wins): readers find exactly those records."""
    packed = msgpack.packb({"big": "v" * 2000})
    zipped = KeyRecord("z", zlib.compress(packed, 6), int(RecordFlags.COMPRESSED), 3, 4, 2)
    records = [
        (Space.USER, [rec("a", 1, 5)]),
        (Space.SYSTEM, [rec("s1", "sys", 6)]),
        (Space.USER, [rec("t", "ttl", 7, expires_at_ms=5_000), zipped, rec("a", 2, 8, version=2)]),
        (Space.SYSTEM, [rec("s2", "sys2", 9)]),
    ]
    pub.reset(records, 9, 9, 1_000)
    assert (9, 2) == (view.status().applied_index, view.get_value("a"))
    assert rec("a", 2, 8, version=2) == view.record("a")
    assert zipped == view.record("z")
    assert {"big": "v" * 2000} == view.get_value("z")
    assert rec("t", "ttl", 7, expires_at_ms=5_000) == view.record("t")
    assert "ttl" == view.get_value("t")
    assert ["a", "t", "z"] == sorted(view.keys())
    assert ["s1", "s2"] == sorted(view.keys(Space.SYSTEM))
    assert rec("s2", "sys2", 9) == view.record("s2", Space.SYSTEM)
    assert 5 == pub.stats().live_records
    pub.reset(records, 10, 10, 6_000)  # leader time passed the TTL
    assert MISSING is view.get_value("t")


def test_keep_up_catches_up_in_slices_when_only_writes_arrive(
    pub: Publisher, view: ShmView, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A view nobody reads falls off the ring and rebuilds from a scan at its next lookup;
    keep_up (the door's and read workers' loops) replays in slices before it does.
    """
    monkeypatch.setattr("concord.shm.view.KEEP_UP_EVERY_S", 0.0)
    rebuilds = view.rebuilds
    step = 64 // 16  # the store fixture's ring of 64 slots, KEEP_UP_FRACTION 16
    pub.publish([put("k0", 0, 1)], 1, 1, 0)
    assert not view.keep_up()  # less than a slice behind: nothing to do yet
    for rev in range(2, 301):
        pub.publish([put(f"k{rev % 50}", rev, rev)], rev, rev, 0)
        view.keep_up()
        assert view.synced_status().applied_index > rev - step - 1
    assert rebuilds == view.rebuilds and 0 == view.overflows
    assert 300 == view.get_value("k0")


def test_synced_applied_index_is_the_synced_status_one_without_catching_up(
    pub: Publisher, view: ShmView
) -> None:
    pub.publish([put("a", 1, 1)], 5, 1, 0)
    view.sync()
    assert 5 == view.synced_applied_index() == view.synced_status().applied_index
    pub.publish([put("b", 2, 2)], 7, 2, 0)
    assert 5 == view.synced_applied_index()  # published, not yet caught up with
    view.sync()
    assert 7 == view.synced_applied_index() == view.synced_status().applied_index
