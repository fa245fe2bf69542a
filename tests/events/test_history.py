"""Unit tests of the retained history, the change encoding and the gap scheme (pure)."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord.kv.record import Change, ChangeType, KeyRecord, RecordFlags, Space
from concord.kv.values import encode_value
from concord.net import event_history
from concord.net.event_history import CHANGE_OVERHEAD_BYTES
from concord.net.events import (
    ENTRY_OVERHEAD_BYTES,
    EventHistory,
    EventsPage,
    HistoryEntry,
    PrefixCounters,
    encode_change,
    encode_events_reply,
    user_entries,
)


def put(key: str, revision: int, value: object = 1, ttl_ms: int = 0, ts: int = 100) -> Change:
    data, flags = encode_value(value, max_value_bytes=1 << 20, threshold_bytes=1024, level=6)
    record = KeyRecord(key, data, flags, revision, revision, 1, ts + ttl_ms if ttl_ms else 0)
    return Change(ChangeType.PUT, Space.USER, key, record, revision, ts)


def delete(key: str, revision: int) -> Change:
    return Change(ChangeType.DELETE, Space.USER, key, None, revision, 100)


def entries(*changes: Change) -> list[HistoryEntry]:
    return user_entries(changes, send_values=True)


def keys(page: EventsPage) -> list[tuple[int, str]]:
    return [(e.revision, e.key) for e in page.entries]


def test_encode_change_carries_v1_fields_when_put_with_ttl() -> None:
    """A put with a TTL encodes type, key, revision, ts, i, n, ttl and the value."""
    entry = encode_change(put("a", 5, {"x": [1, 2]}, ttl_ms=1500), 0, 1, send_values=True)
    decoded = msgpack.unpackb(entry.encode(), raw=False)
    assert {"v": 1, "type": "put", "key": "a", "revision": 5, "ts": 100, "i": 0, "n": 1,
            "ttl": 1.5, "value": {"x": [1, 2]}} == decoded


def test_encode_change_decompresses_value_when_stored_compressed() -> None:
    """A compressed stored value is sent as plain msgpack."""
    big = "x" * 5000
    change = put("k", 3, big)
    assert change.record is not None and change.record.flags & RecordFlags.COMPRESSED
    decoded = msgpack.unpackb(encode_change(change, 0, 1, send_values=True).encode(), raw=False)
    assert big == decoded["value"]


def test_encode_change_omits_value_when_send_values_off() -> None:
    """send_values=False leaves the value out; deletes never carry one."""
    assert "value" not in msgpack.unpackb(encode_change(put("a", 1), 0, 1, False).encode())
    assert "value" not in msgpack.unpackb(encode_change(delete("a", 2), 0, 1, True).encode())


def test_user_entries_number_changes_per_revision_when_bulk() -> None:
    """Changes of one revision get i = 0..n-1 and n; SYSTEM changes are dropped."""
    system = Change(ChangeType.PUT, Space.SYSTEM, "idx", None, 4, 100)
    out = entries(put("a", 3), put("b", 4), system, delete("c", 4), put("d", 9))
    assert [(3, 0, 1), (4, 0, 2), (4, 1, 2), (9, 0, 1)] == [
        (e.revision, e.index, msgpack.unpackb(e.encode())["n"]) for e in out
    ]


def test_query_returns_changes_after_since_when_prefix_given() -> None:
    """events(since, prefix) returns later changes whose key starts with prefix."""
    history = EventHistory(100, 1 << 20)
    history.append(entries(put("user:1", 2), put("other", 3), put("user:2", 5), delete("user:1", 8)))
    page = history.query(2, "user:")
    assert [(5, "user:2"), (8, "user:1")] == keys(page)
    assert (8, False) == (page.next_revision, page.compacted)


def test_query_next_revision_is_head_when_nothing_matches() -> None:
    """With no matching change, next_revision is the head (everything up to it is seen)."""
    history = EventHistory(100, 1 << 20, start_revision=10)
    history.append(entries(put("a", 12)))
    history.advance(20)
    assert EventsPage((), 20, False) == history.query(11, "zzz")


def test_query_is_compacted_when_since_below_floor_by_count() -> None:
    """Retention by count evicts whole old revisions and raises the floor."""
    history = EventHistory(3, 1 << 20)
    history.append(entries(put("a", 1)))
    history.append(entries(put("b", 2), put("c", 2)))
    history.append(entries(put("d", 3), put("e", 3)))
    assert 2 == history.floor
    assert 2 == len(history)
    assert EventsPage((), 2, True) == history.query(1)
    assert [(3, "d"), (3, "e")] == keys(history.query(2))


def test_query_is_compacted_when_since_below_floor_by_bytes() -> None:
    """Retention by bytes keeps the newest revisions within history_bytes."""
    one = entries(put("a", 1, "x" * 100))[0].size_bytes
    history = EventHistory(1000, 2 * one + 10)
    for revision in range(1, 6):
        history.append(entries(put("a", revision, "x" * 100)))
    assert (3, 2) == (history.floor, len(history))
    assert history.size_bytes <= 2 * one + 10
    assert history.query(2).compacted
    assert not history.query(3).compacted


@settings(derandomize=True, max_examples=60)
@given(st.integers(0, 40), st.integers(0, 3000), st.lists(st.integers(1, 4), min_size=1, max_size=400))
def test_history_keeps_bounds_and_resumes_gap_free_when_evicting_over_many_rounds(
        max_entries: int, max_bytes: int, sizes: list[int]) -> None:
    """Against a naive model: newest whole revisions within both bounds; a reader resumes with no gap."""
    history = EventHistory(max_entries, max_bytes)
    model: list[HistoryEntry] = []
    revision = 0
    for count in sizes:
        revision += 1 + count % 2  # revisions with no user change too
        batch = entries(*(put(f"k{revision}.{i}", revision) for i in range(count)))
        history.append(batch)
        model += batch
        while model and (len(model) > max_entries or sum(e.size_bytes for e in model) > max_bytes):
            oldest = model[0].revision
            model = [e for e in model if e.revision != oldest]
        assert len(model) == len(history)
        assert sum(e.size_bytes for e in model) == history.size_bytes
        assert history.size_bytes <= max_bytes and len(history) <= max_entries
        floor = history.floor
        assert (model[0].revision > floor) if model else floor <= revision
        page = history.query(floor, limit=100_000)
        assert [(e.revision, e.key) for e in model] == keys(page)
        assert (revision, False) == (page.next_revision, page.compacted)
        assert history.query(floor - 1).compacted if floor > 0 else True


def test_query_keeps_nothing_when_history_entries_zero() -> None:
    """history_entries = 0: every revision is evicted at once; since = head still works."""
    history = EventHistory(0, 1 << 20)
    history.append(entries(put("a", 4)))
    assert (4, 0) == (history.floor, len(history))
    assert EventsPage((), 4, False) == history.query(4)
    assert history.query(3).compacted


def test_query_pages_only_between_revisions_when_limit_reached() -> None:
    """A page never splits a revision; next_revision continues exactly after it."""
    history = EventHistory(100, 1 << 20)
    history.append(entries(put("a", 1), put("b", 2), put("c", 2), put("d", 2), put("e", 3)))
    first = history.query(0, limit=2)
    assert [(1, "a"), (2, "b"), (2, "c"), (2, "d")] == keys(first)
    assert 2 == first.next_revision
    assert [(3, "e")] == keys(history.query(first.next_revision, limit=2))


def test_reset_compacts_everything_before_revision_when_restarted() -> None:
    """reset(r): history empty, floor = head = r."""
    history = EventHistory(100, 1 << 20)
    history.append(entries(put("a", 1), put("b", 2)))
    history.reset(7)
    assert (7, 7, 0, 0) == (history.floor, history.head, len(history), history.size_bytes)
    assert history.query(6).compacted


def test_append_refuses_when_revision_not_above_head() -> None:
    """Appending an old revision is a caller bug."""
    history = EventHistory(100, 1 << 20)
    history.append(entries(put("a", 5)))
    try:
        history.append(entries(put("b", 4)))
    except ValueError as exc:
        assert "not above head" in str(exc)
    else:
        raise AssertionError("append accepted an old revision")


def test_size_bytes_counts_overhead_when_entries_added() -> None:
    """size_bytes is, per entry, ENTRY_OVERHEAD_BYTES plus its encoding (an encoded entry)
    or plus its key, stored value and CHANGE_OVERHEAD_BYTES (an entry kept as its change)."""
    history = EventHistory(100, 1 << 20)
    changes = [put("a", 1, "x" * 50), put("bb", 1), delete("c", 2)]
    history.append(entries(*changes))
    held = [len(c.key) + (len(c.record.value) if c.record else 0) for c in changes]
    assert sum(held) + 3 * (CHANGE_OVERHEAD_BYTES + ENTRY_OVERHEAD_BYTES) == history.size_bytes
    encoded = encode_change(changes[0], 0, 1, True)
    assert len(encoded.body) + ENTRY_OVERHEAD_BYTES == encoded.size_bytes


def test_changes_encoded_only_when_used_when_retained(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retaining changes encodes nothing; a query's reply encodes what it returns, the same
    bytes as an eager encoding."""
    calls: list[int] = []
    real = event_history._encode_body

    def counting(change: Change, index: int, count: int, send_values: bool) -> tuple[bytes, int]:
        calls.append(change.revision)
        return real(change, index, count, send_values)

    monkeypatch.setattr(event_history, "_encode_body", counting)
    history = EventHistory(100, 1 << 20)
    changes = [put("a", 1, {"x": 1}, ttl_ms=2000), put("b", 2), delete("c", 3)]
    history.append(entries(*changes))
    assert [] == calls
    page = history.query(1)
    assert [encode_change(c, 0, 1, True).encode() for c in changes[1:]] == [
        e.encode() for e in page.entries]
    assert [2, 3] == calls[:2]


def test_events_reply_decodes_as_wire_map_when_encoded() -> None:
    """The spliced reply is one msgpack map with id, ok, events, next_revision, compacted."""
    history = EventHistory(100, 1 << 20)
    history.append(entries(put("a", 1, [1]), delete("a", 2)))
    reply = msgpack.unpackb(encode_events_reply(9, history.query(0)), raw=False)
    assert 9 == reply["id"] and reply["ok"] is True and reply["compacted"] is False
    assert [("put", [1]), ("delete", None)] == [(e["type"], e.get("value")) for e in reply["events"]]
    assert 2 == reply["next_revision"]


# --- the gap scheme --------------------------------------------------------------------


def test_match_counts_only_active_prefixes_when_key_matches() -> None:
    """A key carries a seq for every active prefix it starts with, and only those."""
    counters = PrefixCounters()
    for prefix in (b"", b"user:", b"user:1", b"other"):
        counters.subscribe(prefix)
    assert [[b"", 1], [b"user:", 1], [b"user:1", 1]] == sorted(counters.match(b"user:10"))
    assert [[b"", 2], [b"user:", 2]] == sorted(counters.match(b"user:2"))
    assert [[b"", 3], [b"other", 1]] == sorted(counters.match(b"other"))


def test_unsubscribe_stops_counting_when_last_subscriber_left() -> None:
    """An unsubscribed prefix gets no seq; prefixes of the same length keep theirs."""
    counters = PrefixCounters()
    counters.subscribe(b"ab")
    counters.subscribe(b"cd")
    counters.unsubscribe(b"ab")
    assert [] == counters.match(b"abc")
    assert [[b"cd", 1]] == counters.match(b"cde")


def test_subscribe_refuses_when_max_prefixes_reached() -> None:
    """Beyond max_prefixes a prefix is untracked."""
    counters = PrefixCounters(max_prefixes=1)
    assert counters.subscribe(b"a")
    assert counters.subscribe(b"a")
    assert not counters.subscribe(b"b")


def test_reset_restarts_seqs_when_new_epoch() -> None:
    """A new epoch counts every active prefix from 0 again."""
    counters = PrefixCounters()
    counters.subscribe(b"k")
    counters.match(b"k1")
    counters.reset()
    assert [[b"k", 1]] == counters.match(b"k2")


@pytest.mark.slow
@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([b"", b"a", b"ab", b"b"]))
def test_seq_jump_tells_exactly_the_lost_messages_when_prefix_filtered(seed: int, mine: bytes) -> None:
    """
    For a subscriber of one prefix on a lossy channel, the seqs it sees jump exactly
    over the matching messages it lost (non-matching traffic never looks like a gap).
    """
    rng = random.Random(seed)
    counters = PrefixCounters()
    for prefix in (b"", b"a", b"ab", b"b", mine):
        counters.subscribe(prefix)
    lost_matching = 0
    detected = 0
    expected = 1
    for _ in range(300):
        key = rng.choice([b"a1", b"ab2", b"b3", b"c4", b"abc"])
        seqs: dict[bytes, int] = {}
        for matched, s in counters.match(key):
            assert isinstance(matched, bytes) and isinstance(s, int)
            seqs[matched] = s
        if not key.startswith(mine):
            assert mine not in seqs
            continue
        if rng.random() < 0.3:
            lost_matching += 1
            continue
        seq = seqs[mine]
        detected += seq - expected
        expected = seq + 1
    tail = counters.seq(mine) + 1 - expected  # a heartbeat sync reveals a lost tail
    assert lost_matching == detected + tail
