"""Unit tests of KvStateMachine: each write op, its errors, revisions, TTL, snapshots."""

from __future__ import annotations

import msgpack
import pytest

from concord.errors import CorruptionError
from concord.kv import (
    ChangeType,
    KvConfig,
    KvStateMachine,
    RecordFlags,
    Space,
    encode_command,
    expire_command,
)
from tests.kv.helpers import Driver


@pytest.fixture
def d(sm: KvStateMachine) -> Driver:
    return Driver(sm)


def test_put_returns_revision_when_key_is_new(d: Driver) -> None:
    """A put answers with the store revision, which is the entry's index."""
    applied = d.do("put", {"key": "a", "value": {"n": 1}})
    assert {"revision": 1} == applied.result
    assert 1 == d.sm.revision
    [change] = applied.changes
    assert (ChangeType.PUT, Space.USER, "a", 1, 1000) == (
        change.type, change.space, change.key, change.revision, change.ts_ms
    )
    assert change.record is not None
    assert (1, 1, 1, 0) == (
        change.record.create_revision,
        change.record.mod_revision,
        change.record.version,
        change.record.expires_at_ms,
    )


def test_put_bumps_version_and_keeps_create_revision_when_key_exists(d: Driver) -> None:
    """A second put increments version, moves mod_revision, keeps create_revision."""
    d.do("put", {"key": "a", "value": 1})
    d.do("put", {"key": "other", "value": 1})
    d.do("put", {"key": "a", "value": 2})
    reply = d.sm.get("a", d.ts_ms, meta=True)
    assert {"value": 2, "revision": 3, "version": 2, "create_revision": 1, "ttl": None} == reply


def test_get_returns_not_found_when_key_is_missing(d: Driver) -> None:
    """A missing key reads as not_found."""
    assert {"error": "not_found", "message": "key 'x' not found"} == d.sm.get("x", 0)


def test_value_round_trips_when_it_holds_every_msgpack_kind(d: Driver) -> None:
    """nil, bool, int, float, str, bytes, list and map values come back unchanged."""
    value = {"n": None, "b": True, "i": -5, "f": 1.5, "s": "é", "y": b"\x00", "l": [1, [2]]}
    d.do("put", {"key": "k", "value": value})
    assert {"value": value} == d.sm.get("k", d.ts_ms)


def test_delete_reports_deleted_when_key_exists(d: Driver) -> None:
    """delete removes a live key and publishes a DELETE change."""
    d.do("put", {"key": "a", "value": 1})
    applied = d.do("delete", {"key": "a"})
    assert {"deleted": True, "revision": 2} == applied.result
    assert [(ChangeType.DELETE, "a", None)] == [(c.type, c.key, c.record) for c in applied.changes]
    assert "not_found" == d.sm.get("a", d.ts_ms)["error"]


def test_delete_changes_nothing_when_key_is_missing(d: Driver) -> None:
    """Deleting a missing key answers deleted=false with the unchanged store revision."""
    d.do("put", {"key": "a", "value": 1})
    applied = d.do("delete", {"key": "b"})
    assert {"deleted": False, "revision": 1} == applied.result
    assert [] == applied.changes
    assert 1 == d.sm.revision
    assert 2 == d.sm.applied_index


def test_key_is_hidden_when_its_ttl_is_due(d: Driver) -> None:
    """A key with a TTL is visible before expires_at_ms and hidden at and after it."""
    d.do("put", {"key": "a", "value": 1, "ttl": 2})
    assert {"value": 1, "ttl": 0.001} == d.sm.get_with_ttl("a", 2_999)
    assert "not_found" == d.sm.get("a", 3_000)["error"]
    assert {"ttl": 1.5} == d.sm.ttl("a", 1_500)


def test_read_never_shows_key_when_an_applied_entry_saw_it_expired(d: Driver) -> None:
    """Reads use max(now_ms, last entry time): a lagging clock cannot revive a due key."""
    d.do("put", {"key": "a", "value": 1, "ttl": 1})
    d.ts_ms = 2_500
    assert "condition_failed" == d.do("delete_if", {"key": "a", "version": 1}).result["error"]
    assert "not_found" == d.sm.get("a", 1_500)["error"]
    assert 2_500 == d.sm.read_time(1_500)


def test_ttl_is_nil_when_key_never_expires(d: Driver) -> None:
    """A key put without ttl reports ttl nil."""
    d.do("put", {"key": "a", "value": 1})
    assert {"ttl": None} == d.sm.ttl("a", 10**12)


def test_put_clears_ttl_when_it_gives_none(d: Driver) -> None:
    """A put without ttl makes a key with a TTL persistent."""
    d.do("put", {"key": "a", "value": 1, "ttl": 1})
    d.do("put", {"key": "a", "value": 2})
    assert {"value": 2} == d.sm.get("a", 10**9)


def test_put_recreates_key_when_old_one_is_due(d: Driver) -> None:
    """Writing over a due key starts a new lifetime: version 1, new create_revision."""
    d.do("put", {"key": "a", "value": 1, "ttl": 1})
    d.ts_ms = 5_000
    d.do("put", {"key": "a", "value": 2})
    reply = d.sm.get("a", d.ts_ms, meta=True)
    assert (1, 2) == (reply["version"], reply["create_revision"])


def test_expire_deletes_only_due_keys_when_applied(d: Driver) -> None:
    """The expire command removes keys due at the entry's time and skips the others."""
    d.do("put", {"key": "a", "value": 1, "ttl": 1})
    d.do("put", {"key": "b", "value": 1, "ttl": 10})
    d.do("put", {"key": "c", "value": 1})
    assert ["a"] == d.sm.due_expirations(2_000, 10)
    assert ["a", "b"] == d.sm.due_expirations(11_000, 10)
    assert ["a"] == d.sm.due_expirations(11_000, 1)
    d.ts_ms = 2_000
    applied = d.raw(expire_command(["a", "b", "c", "zz"]))
    assert {"expired": 1, "revision": 4} == applied.result
    assert [(ChangeType.EXPIRE, "a")] == [(c.type, c.key) for c in applied.changes]
    assert [] == d.sm.due_expirations(2_000, 10)


def test_expiry_command_is_none_when_nothing_is_due(d: Driver) -> None:
    """expiry_command proposes only when some key is due, at most `limit` keys."""
    d.do("put_many", {"items": [["a", 1, 1], ["b", 1, 1], ["c", 1]]})
    assert d.sm.expiry_command(1_999) is None
    data = d.sm.expiry_command(2_000, limit=1)
    assert data is not None
    d.ts_ms = 2_000
    assert {"expired": 1, "revision": 2} == d.raw(data).result
    assert ["b"] == d.sm.due_expirations(2_000, 10)


def test_expire_does_nothing_when_key_was_renewed(d: Driver) -> None:
    """An expire proposed for a key that was touched since is a no-op for it."""
    d.do("put", {"key": "a", "value": 1, "ttl": 1})
    keys = d.sm.due_expirations(2_000, 10)
    d.ts_ms = 1_500
    d.do("touch", {"key": "a", "ttl": 60})
    d.ts_ms = 2_000
    applied = d.raw(expire_command(keys))
    assert {"expired": 0, "revision": 2} == applied.result
    assert {"value": 1} == d.sm.get("a", 2_000)


def test_touch_sets_new_expiry_when_key_is_live(d: Driver) -> None:
    """touch changes expires_at_ms and mod_revision but not version."""
    d.do("put", {"key": "a", "value": 1, "ttl": 1})
    applied = d.do("touch", {"key": "a", "ttl": 5})
    assert {"revision": 2} == applied.result
    [change] = applied.changes
    assert change.type == ChangeType.TOUCH and change.record is not None
    assert (6_000, 2, 1) == (
        change.record.expires_at_ms, change.record.mod_revision, change.record.version
    )


def test_touch_without_ttl_makes_key_persistent_when_key_is_live(d: Driver) -> None:
    """touch with ttl nil removes the expiry."""
    d.do("put", {"key": "a", "value": 1, "ttl": 1})
    d.do("touch", {"key": "a", "ttl": None})
    assert {"ttl": None} == d.sm.ttl("a", 50_000)


def test_touch_fails_not_found_when_key_is_due(d: Driver) -> None:
    """A due key cannot be touched back to life."""
    d.do("put", {"key": "a", "value": 1, "ttl": 1})
    d.ts_ms = 2_000
    applied = d.do("touch", {"key": "a", "ttl": 5})
    assert "not_found" == applied.result["error"]
    assert [] == applied.changes


def test_malformed_command_yields_error_when_applied(d: Driver) -> None:
    """Garbage, wrong versions, unknown ops and bad fields change nothing."""
    d.do("put", {"key": "a", "value": 1})
    before = d.sm.state_hash()
    bad = [
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"v": 2, "op": "put"}),
        msgpack.packb({"v": 1, "op": "nope"}),
        msgpack.packb({"v": 1, "op": "put", "key": "a"}),
        msgpack.packb({"v": 1, "op": "put", "key": "a", "value": 1, "flags": 0, "ttl_ms": 0}),
        msgpack.packb({"v": 1, "op": "put", "key": "a", "value": b"\x01", "flags": 8, "ttl_ms": 0}),
        msgpack.packb({"v": 1, "op": "delete", "key": "a", "extra": 1}),
        msgpack.packb({"v": 1, "op": "delete", "key": ""}),
        msgpack.packb({"v": 1, "op": "delete", "key": "a", "client_id": "c"}),
        msgpack.packb({"v": 1, "op": "put_if", "key": "a", "value": b"\x01", "flags": 0,
                       "ttl_ms": 0, "cond": {"absent": True, "version": 1}}),
    ]
    for data in bad:
        applied = d.raw(data)
        assert [] == applied.changes, data
        assert applied.result["error"] in ("invalid_request", "invalid_key"), data
    assert 1 == d.sm.revision
    assert {"value": 1} == d.sm.get("a", d.ts_ms)
    assert before != d.sm.state_hash()  # applied_index moved
    assert d.sm.verify_digest()


def test_apply_rejects_index_when_not_above_applied(d: Driver) -> None:
    """Re-applying an index is a caller bug and raises."""
    d.do("put", {"key": "a", "value": 1})
    with pytest.raises(ValueError, match="not above applied index 1"):
        d.sm.apply(1, 0, encode_command("delete", {"key": "a"}))


def test_apply_treats_empty_data_as_noop_when_entry_is_empty(d: Driver) -> None:
    """The leader's empty entry applies as a no-op with an empty result."""
    d.do("put", {"key": "a", "value": 1})
    d.ts_ms = 4_000
    applied = d.raw(b"")
    assert ({}, []) == (applied.result, applied.changes)
    assert (2, 1, 4_000) == (d.sm.applied_index, d.sm.revision, d.sm.last_ts_ms)


def test_apply_noop_moves_applied_index_when_called(d: Driver) -> None:
    """An empty entry advances applied_index and time, not the revision."""
    d.do("put", {"key": "a", "value": 1})
    d.sm.apply_noop(2, 7_000)
    assert (2, 1, 7_000) == (d.sm.applied_index, d.sm.revision, d.sm.last_ts_ms)


def test_snapshot_restores_identical_state_when_loaded(d: Driver) -> None:
    """restore(snapshot()) gives the same hash, records, sessions and indexes."""
    d.do("put", {"key": "a", "value": {"x": 1}, "ttl": 9})
    d.do("put", {"key": "b", "value": "y" * 5000})
    d.do("create_index", {"name": "byx", "field": "x"})
    d.do("delete", {"key": "zz"}, client_id="c1", seq=4)
    other = KvStateMachine()
    other.restore(d.sm.snapshot())
    assert d.sm.state_hash() == other.state_hash()
    assert d.sm.snapshot() == other.snapshot()
    assert list(d.sm.records()) == list(other.records())
    assert d.sm.read("index_lookup", {"name": "byx", "value": 1}, 0) == other.read(
        "index_lookup", {"name": "byx", "value": 1}, 0
    )
    data = encode_command("delete", {"key": "zz"}, client_id="c1", seq=4)
    assert d.sm.apply(5, 1_000, data).result == other.apply(5, 1_000, data).result


def test_restore_raises_corruption_when_snapshot_is_damaged(d: Driver) -> None:
    """A flipped byte, bad magic or truncation is detected."""
    d.do("put", {"key": "a", "value": 1})
    snap = d.sm.snapshot()
    damaged = [snap[:-1] + bytes([snap[-1] ^ 1]), b"XXXX" + snap[4:], snap[:10], snap[:-3]]
    for data in damaged:
        with pytest.raises(CorruptionError):
            KvStateMachine().restore(data)


def test_compressed_value_reads_back_when_over_threshold(d: Driver) -> None:
    """Values over the threshold are stored compressed and read back decompressed."""
    applied = d.do("put", {"key": "big", "value": "z" * 4096})
    record = applied.changes[0].record
    assert record is not None
    assert RecordFlags.COMPRESSED == record.flags
    assert len(record.value) < 200
    assert {"value": "z" * 4096} == d.sm.get("big", d.ts_ms)


def test_compress_override_wins_when_given(d: Driver) -> None:
    """compress=false stores a big value raw; compress=true compresses a small one."""
    raw = d.do("put", {"key": "a", "value": "z" * 4096, "compress": False}).changes[0].record
    small = d.do("put", {"key": "b", "value": "zz", "compress": True}).changes[0].record
    assert raw is not None and small is not None
    assert (0, 1) == (raw.flags, small.flags)
    assert {"values": {"a": "z" * 4096, "b": "zz"}} == d.sm.get_many(["a", "b"], d.ts_ms)


def test_threshold_is_configurable_when_config_sets_it() -> None:
    """A lower threshold compresses smaller values."""
    d = Driver(KvStateMachine(KvConfig(compress_threshold_bytes=16)))
    record = d.do("put", {"key": "a", "value": "q" * 64}).changes[0].record
    assert record is not None and record.flags == RecordFlags.COMPRESSED


def test_state_hash_differs_when_states_differ(d: Driver) -> None:
    """Two machines with different values have different hashes at the same index."""
    other = Driver(KvStateMachine())
    d.do("put", {"key": "a", "value": 1})
    other.do("put", {"key": "a", "value": 2})
    assert d.sm.state_hash() != other.sm.state_hash()


def test_get_all_pages_when_limit_and_after_given(d: Driver) -> None:
    """get_all returns keys in order, limit at a time, continuing after a key."""
    for key in ["c", "a", "b", "d"]:
        d.do("put", {"key": key, "value": key})
    first = d.sm.get_all(d.ts_ms, limit=2)
    assert {"items": [["a", "a"], ["b", "b"]], "more": True} == first
    assert {"items": [["c", "c"], ["d", "d"]], "more": False} == d.sm.get_all(
        d.ts_ms, limit=2, after="b"
    )


def test_data_hash_is_unchanged_when_entries_change_no_data(d: Driver) -> None:
    """data_hash moves with data only; state_hash also moves with every applied entry."""
    d.do("put", {"key": "a", "value": 1})
    data, state = d.sm.data_hash(), d.sm.state_hash()
    d.sm.apply_noop(d.sm.applied_index + 1, 5000)  # a new leader's empty entry
    assert data == d.sm.data_hash()
    assert state != d.sm.state_hash()
    d.do("put", {"key": "a", "value": 2})
    assert data != d.sm.data_hash()
