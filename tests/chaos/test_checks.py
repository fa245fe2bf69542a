"""The after-the-run checks of concord.chaos.checks, on hand-made logs."""

from __future__ import annotations

from concord.chaos.checks import AckedWrite, NodeLog, check_acked, check_leaders, check_logs
from concord.kv.commands import encode_request
from concord.raft.messages import Entry


def _put(key: str, value: int) -> bytes:
    return encode_request({"op": "put", "key": key, "value": value})


def _log(name: str, commit: int, entries: list[Entry], snapshot_index: int = 0) -> NodeLog:
    return NodeLog(name, snapshot_index, commit, {e.index: e for e in entries})


def test_logs_pass_when_every_node_holds_the_same_entries() -> None:
    """Identical logs (one shorter and less committed) have no violation."""
    entries = [Entry(1, 1, data=_put("a", 1)), Entry(1, 2, data=_put("b", 2))]
    result = check_logs([_log("n1", 2, entries), _log("n2", 1, entries[:1])])
    assert [] == result.violations
    assert 2 == result.checked


def test_logs_fail_when_committed_entries_differ() -> None:
    """Two logs that committed different entries at one index break state-machine safety."""
    a = _log("n1", 1, [Entry(1, 1, data=_put("a", 1))])
    b = _log("n2", 1, [Entry(2, 1, data=_put("a", 2))])
    result = check_logs([a, b])
    assert ["committed entries differ at index=1: term=1 on n1; term=2 on n2"] == result.violations


def test_logs_fail_when_one_term_and_index_hold_two_entries() -> None:
    """Log matching: the same (term, index) must hold the same bytes, committed or not."""
    a = _log("n1", 0, [Entry(3, 1, data=_put("a", 1))])
    b = _log("n2", 0, [Entry(3, 1, data=_put("a", 2))])
    assert 1 == len(check_logs([a, b]).violations)


def test_acked_writes_fail_when_the_revision_holds_another_key() -> None:
    """An acknowledged write whose index holds a different command was lost."""
    log = _log("n1", 2, [Entry(1, 1, data=_put("a", 1)), Entry(1, 2, data=_put("b", 2))])
    assert [] == check_acked([AckedWrite("a", 1), AckedWrite("b", 2)], [log]).violations
    assert 1 == len(check_acked([AckedWrite("a", 2)], [log]).violations)


def test_acked_writes_are_unverifiable_when_compacted_everywhere() -> None:
    """A revision covered by every node's snapshot is counted, not failed."""
    log = _log("n1", 9, [Entry(1, 9, data=_put("a", 1))], snapshot_index=8)
    result = check_acked([AckedWrite("a", 3)], [log])
    assert (0, 1, []) == (result.checked, result.unverifiable, result.violations)


def test_leaders_fail_when_a_term_has_two_leaders() -> None:
    """Election safety: one leader per term."""
    assert ["term=4 had leaders ['n1', 'n2']"] == check_leaders({3: {"n1"}, 4: {"n1", "n2"}}).violations


def test_lock_check_fails_when_two_holds_overlap() -> None:
    """A hold that starts before the previous one's local deadline is two holders at once."""
    from concord.chaos.recipes import check_lock, read_holds

    logs = {
        "a": ['{"e": "renew", "lease": 1, "deadline": 10.0}',
              '{"e": "acquired", "lease": 1, "token": 5, "t": 1.0}'],  # SIGKILLed: no release
        "b": ['{"e": "renew", "lease": 2, "deadline": 30.0}',
              '{"e": "acquired", "lease": 2, "token": 9, "t": 9.5}',
              '{"e": "release", "lease": 2, "t": 12.0}', '{"e": "acq'],  # a cut line
    }
    result = check_lock(read_holds(logs))
    assert 2 == result.checked
    assert 1 == len(result.violations) and "two holders at once" in result.violations[0]
    logs["b"][1] = '{"e": "acquired", "lease": 2, "token": 9, "t": 10.0}'
    assert check_lock(read_holds(logs)).ok


def test_lock_check_fails_when_a_later_hold_has_a_lower_token() -> None:
    from concord.chaos.recipes import Hold, check_lock

    holds = [Hold("a", 1, 7, 1.0, 2.0), Hold("b", 2, 6, 3.0, 4.0)]
    result = check_lock(holds)
    assert 1 == len(result.violations) and "fencing token did not grow" in result.violations[0]


def test_counter_check_fails_when_an_acknowledged_increment_is_missing_or_doubled() -> None:
    """acked <= value <= acked + unknown."""
    from concord.chaos.recipes import Counter, check_counter

    counter = Counter()
    counter.acked, counter.unknown = 10, 2
    assert check_counter(counter, 11).ok
    assert not check_counter(counter, 9).ok
    assert not check_counter(counter, 13).ok
    assert not check_counter(counter, "x").ok
