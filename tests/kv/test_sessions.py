"""Exactly-once sessions with many writes in flight (Raft thesis §6.3): kv/sessions.py."""

from __future__ import annotations

import msgpack
import pytest

from concord.kv import KvConfig, KvStateMachine
from concord.kv.sessions import DEFAULT_MAX_RESULTS
from tests.kv.helpers import Driver


@pytest.fixture
def d(sm: KvStateMachine) -> Driver:
    return Driver(sm)


def test_every_retried_write_is_deduplicated_when_several_are_in_flight(d: Driver) -> None:
    """Raft thesis §6.3: seqs 1..3 in flight; a retry of 1 after 3 applied gets 1's result."""
    first = d.do("incr", {"key": "n"}, client_id="c", seq=1, min_seq=1)
    d.do("incr", {"key": "n"}, client_id="c", seq=3, min_seq=1)
    d.do("incr", {"key": "n"}, client_id="c", seq=2, min_seq=1)  # applied out of order
    retry = d.do("incr", {"key": "n"}, client_id="c", seq=1, min_seq=1)
    assert first.result == retry.result
    assert [] == retry.changes
    assert 3 == d.sm.get("n", d.ts_ms)["value"]


def test_results_below_min_seq_are_forgotten_when_acknowledged(d: Driver) -> None:
    """min_seq raises the floor: earlier results are dropped, and a stale retry is refused."""
    d.do("put", {"key": "a", "value": 1}, client_id="c", seq=1, min_seq=1)
    d.do("put", {"key": "a", "value": 2}, client_id="c", seq=2, min_seq=2)
    session = d.sm._sessions.get("c")
    assert session is not None and [2] == sorted(session.results)
    stale = d.do("put", {"key": "a", "value": 1}, client_id="c", seq=1, min_seq=1)
    assert "invalid_request" == stale.result["error"]
    assert 2 == d.sm.get("a", d.ts_ms)["value"]


def test_a_write_without_min_seq_keeps_only_the_latest_result_when_sent(d: Driver) -> None:
    """Protocol v1 clients (no min_seq) keep their behaviour: min_seq defaults to seq."""
    d.do("put", {"key": "a", "value": 1}, client_id="c", seq=1)
    d.do("put", {"key": "a", "value": 2}, client_id="c", seq=2)
    stale = d.do("put", {"key": "a", "value": 9}, client_id="c", seq=1)
    assert "invalid_request" == stale.result["error"]


def test_session_memory_is_bounded_when_a_client_never_acknowledges() -> None:
    """A session keeps at most max_results results; one more is refused and changes nothing."""
    d = Driver(KvStateMachine(KvConfig()))
    for seq in range(DEFAULT_MAX_RESULTS):
        assert "error" not in d.do("incr", {"key": "n"}, client_id="c", seq=seq, min_seq=0).result
    over = d.do("incr", {"key": "n"}, client_id="c", seq=DEFAULT_MAX_RESULTS, min_seq=0)
    assert "invalid_request" == over.result["error"]
    assert DEFAULT_MAX_RESULTS == d.sm.get("n", d.ts_ms)["value"]
    acked = d.do("incr", {"key": "n"}, client_id="c", seq=DEFAULT_MAX_RESULTS, min_seq=10)
    assert DEFAULT_MAX_RESULTS + 1 == acked.result["value"]


def test_idle_session_expires_by_entry_time_when_session_ttl_passes() -> None:
    """Sessions expire by the leader's entry timestamps, the same on every replica."""
    d = Driver(KvStateMachine(KvConfig(session_ttl_ms=1000)))
    d.do("incr", {"key": "n"}, client_id="c", seq=1, min_seq=1)
    d.ts_ms += 1001
    d.do("put", {"key": "x", "value": 0}, client_id="other", seq=1)
    assert d.sm._sessions.get("c") is None


def test_sessions_survive_a_snapshot_when_several_results_are_kept(d: Driver) -> None:
    """The format-2 snapshot keeps every result above the floor, and the state hash matches."""
    d.do("incr", {"key": "n"}, client_id="c", seq=5, min_seq=4)
    d.do("incr", {"key": "n"}, client_id="c", seq=4, min_seq=4)
    copy = KvStateMachine()
    copy.restore(d.sm.snapshot())
    assert d.sm.state_hash() == copy.state_hash()
    retry = Driver(copy, d.ts_ms).do("incr", {"key": "n"}, client_id="c", seq=5, min_seq=4)
    assert {"value": 1, "revision": 1} == retry.result


def test_a_format_1_snapshot_is_read_when_restoring() -> None:
    """A snapshot written by format 1 (one result per session, no leases) still restores."""
    import struct
    import xxhash
    from concord.kv.machine import _STATE, SNAPSHOT_MAGIC

    # Format 1's session digest: xxh3_64 of each row [client_id, seq, result, index, ts].
    row = ["c", 3, {"revision": 7}, 7, 1000]
    digest = xxhash.xxh3_64_intdigest(msgpack.packb(row, use_bin_type=True))
    state = xxhash.xxh3_64_intdigest(_STATE.pack(7, 0, 1000, 0, digest))
    body = msgpack.packb([7, 0, 1000, [], [], [row]])
    data = struct.pack("<4sBQ", SNAPSHOT_MAGIC, 1, state) + body
    sm = KvStateMachine()
    sm.restore(data)
    retry = Driver(sm).do("delete", {"key": "k"}, client_id="c", seq=3)
    assert {"revision": 7} == retry.result


def test_min_seq_above_seq_is_refused_when_encoded() -> None:
    """min_seq may not exceed seq (the client has not acknowledged a write it never sent)."""
    from concord.errors import InvalidRequestError
    from concord.kv import encode_command

    with pytest.raises(InvalidRequestError, match="min_seq 5 is above seq 4"):
        encode_command("delete", {"key": "k"}, client_id="c", seq=4, min_seq=5)
