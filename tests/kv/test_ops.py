"""Bulk ops, conditional writes, delete_where, secondary indexes and sessions via apply."""

from __future__ import annotations

from collections.abc import Mapping

import msgpack
import pytest

from concord.kv import ChangeType, KeyRecord, KvConfig, KvStateMachine, Space
from tests.kv.helpers import Driver


def keys_of(reply: Mapping[str, object]) -> list[object]:
    """The keys of a reply's `items` ([key, value] pairs)."""
    items = reply["items"]
    assert isinstance(items, list)
    return [k for k, _ in items]


@pytest.fixture
def d(sm: KvStateMachine) -> Driver:
    return Driver(sm)


def test_put_many_shares_one_revision_when_applied(d: Driver) -> None:
    """Every key of a put_many gets the entry's index as mod_revision."""
    applied = d.do("put_many", {"items": [["a", 1], ["b", 2, 5]]})
    assert {"revision": 1} == applied.result
    assert [("a", 1, 0), ("b", 1, 6000)] == [
        (c.key, c.revision, c.record.expires_at_ms if c.record else -1) for c in applied.changes
    ]
    assert {"values": {"a": 1, "b": 2}} == d.sm.get_many(["a", "b", "c"], d.ts_ms)


def test_put_many_changes_nothing_when_one_logged_item_is_invalid(d: Driver) -> None:
    """A put_many whose log entry holds one bad item applies none of its items."""
    d.do("put", {"key": "a", "value": 1})
    data = msgpack.packb({"v": 1, "op": "put_many", "items": [
        ["a", b"\x02", 0, 0], ["b", b"\x03", 0, 0], ["", b"\x04", 0, 0],
    ]}, use_bin_type=True)
    applied = d.raw(data)
    assert ("invalid_key", []) == (applied.result["error"], applied.changes)
    assert {"values": {"a": 1}} == d.sm.get_many(["a", "b"], d.ts_ms)


def test_system_records_other_than_indexes_survive_restore_when_present(d: Driver) -> None:
    """restore only rebuilds indexes from index/ records and keeps the others as they are."""
    d.do("create_index", {"name": "n", "field": "n"})
    d.sm._store_system(KeyRecord("tenant/acme", b"\x80", 0, 2, 2, 1))
    other = KvStateMachine()
    other.restore(d.sm.snapshot())
    assert d.sm.system_records() == other.system_records()
    assert {"indexes": [{"name": "n", "field": "n"}]} == other.read("list_indexes", {}, 0)


def test_delete_many_counts_only_live_keys_when_some_are_missing(d: Driver) -> None:
    """delete_many deletes what exists and reports how many."""
    d.do("put_many", {"items": [["a", 1], ["b", 2]]})
    applied = d.do("delete_many", {"keys": ["a", "zz", "b", "a"]})
    assert {"deleted": 2, "revision": 2} == applied.result
    assert ["a", "b"] == [c.key for c in applied.changes]


def test_touch_many_changes_nothing_when_one_key_is_missing(d: Driver) -> None:
    """touch_many is all-or-nothing: one absent key fails the whole op."""
    d.do("put", {"key": "a", "value": 1, "ttl": 1})
    before = d.sm.state_hash()
    applied = d.do("touch_many", {"items": [["a", 10], ["missing", 10]]})
    assert {"error": "not_found", "message": "key 'missing' not found"} == applied.result
    assert [] == applied.changes
    assert {"ttl": 1.0} == d.sm.ttl("a", 1000)
    assert before != d.sm.state_hash() and d.sm.revision == 1


def test_touch_many_touches_all_when_every_key_exists(d: Driver) -> None:
    """Every key gets its new TTL and a TOUCH change at one revision."""
    d.do("put_many", {"items": [["a", 1], ["b", 2]]})
    applied = d.do("touch_many", {"keys": ["a", "b"], "ttl": 3})
    assert [ChangeType.TOUCH, ChangeType.TOUCH] == [c.type for c in applied.changes]
    assert {"value": 2, "ttl": 3.0} == d.sm.get_with_ttl("b", d.ts_ms)


@pytest.mark.parametrize(
    ("cond", "ok"),
    [
        ({"expected": {"n": 1}}, True),
        ({"expected": {"n": 1.0}}, True),
        ({"expected": {"n": 2}}, False),
        ({"expected": {"n": True}}, False),
        ({"version": 1}, True),
        ({"version": 2}, False),
        ({"mod_revision": 1}, True),
        ({"mod_revision": 0}, False),
        ({"absent": True}, False),
    ],
)
def test_put_if_follows_condition_when_key_exists(
    d: Driver, cond: dict[str, object], ok: bool
) -> None:
    """put_if writes only when its condition holds on the live key."""
    d.do("put", {"key": "a", "value": {"n": 1}})
    applied = d.do("put_if", {"key": "a", "value": "new", **cond})
    if ok:
        assert {"revision": 2} == applied.result
        assert {"value": "new"} == d.sm.get("a", d.ts_ms)
    else:
        assert "condition_failed" == applied.result["error"]
        assert [] == applied.changes
        assert {"value": {"n": 1}} == d.sm.get("a", d.ts_ms)


@pytest.mark.parametrize(
    ("cond", "ok"),
    [
        ({"absent": True}, True),
        ({"version": 0}, True),
        ({"mod_revision": 0}, True),
        ({"version": 1}, False),
        ({"expected": None}, False),
    ],
)
def test_put_if_follows_condition_when_key_is_absent(
    d: Driver, cond: dict[str, object], ok: bool
) -> None:
    """absent, version 0 and mod_revision 0 match a missing key; expected never does."""
    applied = d.do("put_if", {"key": "a", "value": 1, **cond})
    assert ok == ("revision" in applied.result)


def test_put_if_absent_succeeds_when_old_key_is_due(d: Driver) -> None:
    """A due key counts as absent for create-if-absent."""
    d.do("put", {"key": "lock", "value": "a", "ttl": 1})
    d.ts_ms = 2_000
    applied = d.do("put_if", {"key": "lock", "value": "b", "absent": True, "ttl": 1})
    assert {"revision": 2} == applied.result


def test_delete_if_deletes_when_version_matches(d: Driver) -> None:
    """delete_if with the current version deletes; a stale one fails."""
    d.do("put", {"key": "a", "value": 1})
    d.do("put", {"key": "a", "value": 2})
    assert "condition_failed" == d.do("delete_if", {"key": "a", "version": 1}).result["error"]
    assert {"deleted": True, "revision": 4} == d.do("delete_if", {"key": "a", "version": 2}).result


def test_delete_where_deletes_matches_when_applied(d: Driver) -> None:
    """delete_where removes every live match at one revision."""
    d.do("put_many", {"items": [["u:1", {"age": 5}], ["u:2", {"age": 50}], ["v:1", {"age": 9}]]})
    applied = d.do("delete_where", {"prefix": "u:", "where": ["lt", "age", 10]})
    assert {"deleted": 1, "revision": 2} == applied.result
    assert {"keys": ["u:2", "v:1"], "more": False} == d.sm.keys({}, d.ts_ms)


def test_delete_where_honours_limit_when_given(d: Driver) -> None:
    """A limit bounds how many keys one delete_where removes (in key order)."""
    d.do("put_many", {"items": [[f"k{i}", i] for i in range(5)]})
    assert {"deleted": 2, "revision": 2} == d.do("delete_where", {"limit": 2}).result
    assert {"count": 3} == d.sm.count({}, d.ts_ms)


def test_index_definition_is_a_system_record_when_created(d: Driver) -> None:
    """create_index publishes a SYSTEM PUT; drop_index a SYSTEM DELETE."""
    created = d.do("create_index", {"name": "by_city", "field": "addr.city"})
    assert {"created": True, "revision": 1} == created.result
    [change] = created.changes
    assert (Space.SYSTEM, "index/by_city", ChangeType.PUT) == (
        change.space, change.key, change.type
    )
    again = d.do("create_index", {"name": "by_city", "field": "addr.city"})
    assert ({"created": False, "revision": 1}, []) == (again.result, again.changes)
    clash = d.do("create_index", {"name": "by_city", "field": "zip"})
    assert "invalid_request" == clash.result["error"]
    dropped = d.do("drop_index", {"name": "by_city"})
    assert {"dropped": True, "revision": 4} == dropped.result
    assert [(Space.SYSTEM, ChangeType.DELETE)] == [(c.space, c.type) for c in dropped.changes]
    assert {"dropped": False, "revision": 4} == d.do("drop_index", {"name": "by_city"}).result


def test_index_lookup_follows_writes_when_values_change(d: Driver) -> None:
    """The index is kept current by puts, deletes and expiry."""
    d.do("put", {"key": "a", "value": {"city": "Oslo"}})
    d.do("create_index", {"name": "c", "field": "city"})
    d.do("put", {"key": "b", "value": {"city": "Oslo"}, "ttl": 1})
    d.do("put", {"key": "c", "value": {"city": "Rome"}})
    lookup = {"name": "c", "value": "Oslo"}
    assert [["a", {"city": "Oslo"}], ["b", {"city": "Oslo"}]] == d.sm.read(
        "index_lookup", lookup, d.ts_ms
    )["items"]
    d.do("put", {"key": "a", "value": {"city": "Rome"}})
    assert ["b"] == keys_of(d.sm.read("index_lookup", lookup, d.ts_ms))
    assert [] == d.sm.read("index_lookup", lookup, 5_000)["items"]  # b is due
    d.do("delete", {"key": "c"})
    rome = d.sm.read("index_lookup", {"name": "c", "value": "Rome"}, d.ts_ms)
    assert ["a"] == keys_of(rome)


def test_index_lookup_ranges_when_range_given(d: Driver) -> None:
    """A range lookup returns keys in (value, key) order, bounds inclusive, nil open."""
    d.do("create_index", {"name": "age", "field": "age"})
    d.do("put_many", {"items": [["a", {"age": 30}], ["b", {"age": 20}], ["c", {"age": 25.5}],
                                ["d", {"age": "old"}], ["e", {"x": 1}]]})
    got = d.sm.read("index_lookup", {"name": "age", "range": [20, 30]}, d.ts_ms)
    assert ["b", "c", "a"] == keys_of(got)
    got = d.sm.read("index_lookup", {"name": "age", "range": [21, None]}, d.ts_ms)
    assert ["c", "a"] == keys_of(got)
    assert {"indexes": [{"name": "age", "field": "age"}]} == d.sm.read("list_indexes", {}, 0)
    missing = d.sm.read("index_lookup", {"name": "nope", "value": 1}, 0)
    assert "not_found" == missing["error"]


def test_query_uses_index_when_where_is_indexed(d: Driver) -> None:
    """A where clause on an indexed field gives the same answer as a scan."""
    d.do("put_many", {"items": [[f"k{i:02d}", {"g": i % 3, "i": i}] for i in range(30)]})
    query = {"where": ["and", ["eq", "g", 1], ["lt", "i", 20]], "prefix": "k1"}
    before = d.sm.query(query, d.ts_ms)
    d.do("create_index", {"name": "g", "field": "g"})
    assert before == d.sm.query(query, d.ts_ms)
    assert ["k10", "k13", "k16", "k19"] == keys_of(before)


def test_retried_write_applies_once_when_session_pair_repeats(d: Driver) -> None:
    """The same (client_id, seq) is answered with the first result and not re-applied."""
    first = d.do("put", {"key": "a", "value": 1}, client_id="c", seq=1)
    d.do("put", {"key": "a", "value": 2})
    retry = d.do("put", {"key": "a", "value": 1}, client_id="c", seq=1)
    assert {"revision": 1} == first.result
    assert ({"revision": 1}, []) == (retry.result, retry.changes)
    assert {"value": 2} == d.sm.get("a", d.ts_ms)


def test_retried_error_repeats_when_first_attempt_failed(d: Driver) -> None:
    """An error result is remembered too (the retry does not re-evaluate)."""
    d.do("put", {"key": "a", "value": 1})
    first = d.do("put_if", {"key": "a", "value": 3, "absent": True}, client_id="c", seq=5)
    d.do("delete", {"key": "a"})
    retry = d.do("put_if", {"key": "a", "value": 3, "absent": True}, client_id="c", seq=5)
    assert first.result == retry.result and "condition_failed" == retry.result["error"]


def test_old_seq_is_rejected_when_a_newer_one_was_applied(d: Driver) -> None:
    """A seq below the client's last one gets invalid_request and changes nothing."""
    d.do("put", {"key": "a", "value": 1}, client_id="c", seq=2)
    stale = d.do("put", {"key": "a", "value": 9}, client_id="c", seq=1)
    assert "invalid_request" == stale.result["error"]
    assert {"value": 1} == d.sm.get("a", d.ts_ms)


def test_sessions_are_evicted_when_over_capacity_or_idle() -> None:
    """The least recently used session goes first; idle sessions expire by entry time."""
    d = Driver(KvStateMachine(KvConfig(max_sessions=2, session_ttl_ms=10_000)))
    d.do("put", {"key": "a", "value": 1}, client_id="c1", seq=1)
    d.do("put", {"key": "a", "value": 2}, client_id="c2", seq=1)
    d.do("put", {"key": "a", "value": 3}, client_id="c3", seq=1)  # evicts c1
    replay = d.do("put", {"key": "a", "value": 1}, client_id="c1", seq=1)
    assert 1 == len(replay.changes)  # c1 forgotten: applied again
    d.ts_ms = 100_000
    d.do("put", {"key": "b", "value": 1}, client_id="c4", seq=1)  # everyone else idle
    replay = d.do("put", {"key": "a", "value": 5}, client_id="c3", seq=1)
    assert 1 == len(replay.changes)


def test_session_result_is_not_aliased_when_caller_mutates_reply(d: Driver) -> None:
    """Mutating a returned result does not change the remembered one."""
    first = d.do("put", {"key": "a", "value": 1}, client_id="c", seq=1)
    first.result["id"] = 99
    retry = d.do("put", {"key": "a", "value": 1}, client_id="c", seq=1)
    assert {"revision": 1} == retry.result
