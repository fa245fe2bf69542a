"""The linearizability checker: known violations are rejected, correct histories pass."""

from __future__ import annotations

import pickle
import random
import time
from collections.abc import Hashable

import pytest

from concord.sim.linearizability import (
    ABSENT,
    OpKind,
    Operation,
    Outcome,
    Verdict,
    check_history,
    check_key,
)

K = "k"


def op(
    client: int,
    kind: OpKind,
    args: tuple[Hashable, ...],
    start: float,
    end: float | None,
    result: Hashable = None,
    outcome: Outcome = Outcome.OK,
    key: str = K,
) -> Operation:
    return Operation(client, kind, key, args, start, end, outcome, result)


def put(c: int, v: Hashable, s: float, e: float | None, **kw: object) -> Operation:
    return op(c, OpKind.PUT, (v,), s, e, None, **kw)  # type: ignore[arg-type]


def get(c: int, r: Hashable, s: float, e: float, key: str = K) -> Operation:
    return op(c, OpKind.GET, (), s, e, r, key=key)


def verdict(*ops: Operation) -> Verdict:
    return check_key(K, ops).verdict


def test_stale_read_is_rejected_when_write_completed_before_read() -> None:
    """A read that starts after a completed write must see it."""
    assert Verdict.VIOLATION == verdict(put(1, 1, 0, 1), put(1, 2, 2, 3), get(2, 1, 4, 5))


def test_lost_write_is_rejected_when_later_reads_never_see_it() -> None:
    """An acknowledged write that vanishes (read returns absent afterwards) is a violation."""
    assert Verdict.VIOLATION == verdict(put(1, 1, 0, 1), get(2, ABSENT, 2, 3))


def test_double_cas_is_rejected_when_both_succeed_from_the_same_value() -> None:
    """Two CAS ops expecting the same value cannot both succeed."""
    assert Verdict.VIOLATION == verdict(
        put(1, 0, 0, 1),
        op(2, OpKind.PUT_IF, (0, 1), 2, 5, True),
        op(3, OpKind.PUT_IF, (0, 2), 2, 5, True),
    )


def test_read_is_rejected_when_value_was_never_written() -> None:
    """A read cannot return a value nobody wrote."""
    assert Verdict.VIOLATION == verdict(put(1, 1, 0, 1), get(2, 7, 0, 3))


def test_read_going_back_in_time_is_rejected_when_reads_do_not_overlap() -> None:
    """Once a read saw the new value, a later read cannot see the old one."""
    assert Verdict.VIOLATION == verdict(
        put(1, 1, 0, 1),
        put(1, 2, 2, 10),
        get(2, 2, 3, 4),
        get(3, 1, 5, 6),
    )


def test_delete_result_is_rejected_when_key_was_absent() -> None:
    """delete reporting deleted=True on a never-written key is a violation."""
    assert Verdict.VIOLATION == verdict(op(1, OpKind.DELETE, (), 0, 1, True))


def test_concurrent_reads_pass_when_write_overlaps_both() -> None:
    """Reads overlapping a write may see old then new (but not new then old sequentially)."""
    assert Verdict.OK == verdict(
        put(1, 1, 0, 1),
        put(1, 2, 2, 10),
        get(2, 1, 3, 4),
        get(3, 2, 5, 6),
    )


def test_unknown_write_passes_when_it_takes_effect_late() -> None:
    """An UNKNOWN write may take effect long after its invocation, or never."""
    assert Verdict.OK == verdict(
        put(1, 1, 0, 1, outcome=Outcome.UNKNOWN),
        get(2, ABSENT, 2, 3),
        get(2, 1, 100, 101),
    )
    assert Verdict.OK == verdict(put(1, 1, 0, None, outcome=Outcome.UNKNOWN), get(2, ABSENT, 2, 3))


def test_unknown_write_is_rejected_when_read_before_invocation() -> None:
    """An UNKNOWN write cannot be seen by a read that completed before it was invoked."""
    assert Verdict.VIOLATION == verdict(
        get(2, 1, 0, 1), put(1, 1, 2, None, outcome=Outcome.UNKNOWN)
    )


def test_failed_ops_are_ignored_when_outcome_is_fail() -> None:
    """A definitely-failed write never takes effect, so reading its value is a violation."""
    failed = put(1, 1, 0, 1, outcome=Outcome.FAIL)
    assert Verdict.VIOLATION == verdict(failed, get(2, 1, 2, 3))
    assert Verdict.OK == verdict(failed, get(2, ABSENT, 2, 3))


def test_cas_chain_passes_when_each_cas_builds_on_the_last() -> None:
    """put_if/delete_if results are checked against the register value."""
    assert Verdict.OK == verdict(
        op(1, OpKind.PUT_IF, (ABSENT, 1), 0, 1, True),
        op(2, OpKind.PUT_IF, (ABSENT, 2), 2, 3, False),
        op(1, OpKind.PUT_IF, (1, 3), 4, 5, True),
        op(2, OpKind.DELETE_IF, (1,), 6, 7, False),
        op(2, OpKind.DELETE_IF, (3,), 8, 9, True),
        op(3, OpKind.DELETE, (), 10, 11, False),
        get(3, ABSENT, 12, 13),
    )


def test_explanation_names_the_ops_involved_when_history_is_violating() -> None:
    """The explanation is small and contains the stale read and the write it missed."""
    noise = [put(9, 100 + i, 20 + 2 * i, 21 + 2 * i) for i in range(20)]
    ops = [put(1, 1, 0, 1), put(1, 2, 2, 3), get(2, 1, 4, 5), *noise]
    result = check_key(K, ops)
    assert Verdict.VIOLATION == result.verdict
    assert {ops[1], ops[2]} <= set(result.explanation)
    assert len(result.explanation) <= 3
    assert "get" in result.describe()


def test_budget_yields_unknown_when_steps_run_out() -> None:
    """A tiny step budget gives verdict UNKNOWN instead of hanging."""
    ops = [put(c, c, 0, 10) for c in range(12)] + [get(0, 99, 11, 12)]
    assert Verdict.UNKNOWN == check_key(K, ops, max_steps=50).verdict


def test_keys_are_checked_independently_when_history_spans_keys() -> None:
    """A violation on one key does not taint another key's verdict."""
    ops = [
        put(1, 1, 0, 1, key="a"),
        get(2, ABSENT, 2, 3, key="a"),
        put(1, 1, 0, 1, key="b"),
        get(2, 1, 2, 3, key="b"),
    ]
    result = check_history(ops)
    assert ["a"] == [v.key for v in result.violations]
    assert Verdict.OK == result.keys["b"].verdict
    assert not result.ok


def test_operation_pickles_when_it_holds_absent() -> None:
    """Histories cross process boundaries (multiprocessing seed runs)."""
    o = get(1, ABSENT, 0, 1)
    assert o == pickle.loads(pickle.dumps(o))
    assert pickle.loads(pickle.dumps(ABSENT)) is ABSENT


SINGLE_KEY_KINDS = [OpKind.PUT, OpKind.GET, OpKind.DELETE, OpKind.PUT_IF, OpKind.DELETE_IF]


def generate_history(
    seed: int, clients: int, ops_per_client: int, keys: int, unknown_p: float = 0.02
) -> list[Operation]:
    """A correct history: each op takes effect at a random point inside its interval."""
    rng = random.Random(seed)
    planned: list[tuple[float, int, OpKind, str, tuple[Hashable, ...], float, float, Outcome]] = []
    counter = 0
    for c in range(clients):
        t = rng.uniform(0, 5)
        for _ in range(ops_per_client):
            start = t
            end = start + rng.uniform(0.5, 20)
            point = rng.uniform(start, end)
            key = f"k{rng.randrange(keys)}"
            kind = rng.choice(SINGLE_KEY_KINDS)
            counter += 1
            if kind is OpKind.PUT:
                args: tuple[Hashable, ...] = (counter,)
            elif kind is OpKind.PUT_IF:
                args = (rng.choice([ABSENT, counter - rng.randrange(1, 50)]), counter)
            elif kind is OpKind.DELETE_IF:
                args = (counter - rng.randrange(1, 50),)
            else:
                args = ()
            outcome = Outcome.UNKNOWN if rng.random() < unknown_p else Outcome.OK
            planned.append((point, c, kind, key, args, start, end, outcome))
            t = end + rng.uniform(0, 3)
    planned.sort()
    registers: dict[str, Hashable] = {}
    history = []
    for point, c, kind, key, args, start, end, outcome in planned:
        state = registers.get(key, ABSENT)
        result: Hashable = None
        if kind is OpKind.GET:
            result = state
        elif kind is OpKind.PUT:
            state = args[0]
        elif kind is OpKind.DELETE:
            result = state is not ABSENT
            state = ABSENT
        elif kind is OpKind.PUT_IF:
            result = state == args[0]
            state = args[1] if result else state
        else:
            result = state is not ABSENT and state == args[0]
            state = ABSENT if result else state
        if outcome is Outcome.UNKNOWN and rng.random() < 0.5:
            continue  # this one never took effect: keep the register unchanged
        registers[key] = state
        done = None if outcome is Outcome.UNKNOWN else end
        history.append(Operation(c, kind, key, args, start, done, outcome, result))
    return history


def test_generated_history_passes_when_it_is_small() -> None:
    """Correct random histories (incl. unknown outcomes) are accepted."""
    for seed in range(30):
        history = generate_history(seed, clients=4, ops_per_client=30, keys=2, unknown_p=0.1)
        result = check_history(history)
        assert result.ok, f"seed={seed}\n{result.describe()}"
        assert [] == result.unknown_keys


def test_mutated_history_is_rejected_when_a_read_result_is_corrupted() -> None:
    """Changing one read to a never-written value makes a correct history a violation."""
    history = generate_history(7, clients=4, ops_per_client=40, keys=1)
    i = next(i for i, o in enumerate(history) if o.kind is OpKind.GET)
    o = history[i]
    history[i] = Operation(o.client_id, o.kind, o.key, o.args, o.invoke_time,
                           o.complete_time, o.outcome, -12345)
    assert Verdict.VIOLATION == check_history(history).keys[o.key].verdict


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_large_history_passes_quickly_when_linearizable() -> None:
    """10 clients x 2,000 ops over 4 keys: accepted in a few seconds."""
    history = generate_history(1, clients=10, ops_per_client=2000, keys=4)
    assert 19000 < len(history)
    started = time.process_time()
    result = check_history(history)
    elapsed = time.process_time() - started
    assert result.ok, result.describe()
    assert [] == result.unknown_keys
    # About 0.3 s of CPU on an idle machine; the bound leaves room for a loaded one.
    assert elapsed < 8.0, f"took {elapsed:.2f}s"


# -- the key-value model: versions, TTLs by cluster time, conditions, bulk operations --


def test_ttl_read_is_judged_by_cluster_time_when_operations_carry_it() -> None:
    """A key put with a TTL is gone for reads at cluster time >= put time + ttl."""
    from dataclasses import replace

    ttl_put = replace(op(1, OpKind.PUT, (5, 100), 0, 1), ts=10)
    before = replace(get(2, 5, 2, 3), ts=109)
    after_value = replace(get(2, 5, 4, 5), ts=110)
    after_absent = replace(get(2, ABSENT, 4, 5), ts=110)
    assert check_history([ttl_put, before, after_absent]).ok
    assert not check_history([ttl_put, before, after_value]).ok
    # Cluster time must not run backwards along the order: a read at ts 105 cannot
    # follow one at ts 110.
    late = replace(get(3, 5, 6, 7), ts=105)
    assert not check_history([ttl_put, after_absent, late]).ok


def test_versions_are_checked_when_reads_return_them() -> None:
    """Version: 1 on create, +1 per put, back to 1 after a delete."""
    from concord.sim.linearizability import Versioned

    history = [
        put(1, 5, 0, 1), put(1, 6, 2, 3),
        get(2, Versioned(6, 2), 4, 5),
        op(1, OpKind.DELETE, (), 6, 7, True), put(1, 7, 8, 9),
        get(2, Versioned(7, 1), 10, 11),
    ]
    assert check_history(history).ok
    history[2] = get(2, Versioned(6, 3), 4, 5)
    assert not check_history(history).ok


def test_put_if_version_holds_only_when_the_version_matches() -> None:
    """A put_if on version n succeeds exactly when the key's version is n (0: absent)."""
    from concord.sim.linearizability import Version

    ok = [
        op(1, OpKind.PUT_IF, (Version(0), 5), 0, 1, True),
        op(1, OpKind.PUT_IF, (Version(2), 6), 2, 3, False),
        op(1, OpKind.PUT_IF, (Version(1), 7), 4, 5, True),
        get(2, 7, 6, 7),
    ]
    assert check_history(ok).ok
    ok[1] = op(1, OpKind.PUT_IF, (Version(1), 6), 2, 3, False)
    assert not check_history(ok).ok


def test_bulk_put_is_rejected_when_seen_half_applied() -> None:
    """put_many is atomic: no read may see one key new and another old after it."""
    bulk = Operation(1, OpKind.PUT_MANY, "a", ((1, 2), 0), 0, 10, Outcome.UNKNOWN,
                     keys=("a", "b"))
    new_a = get(2, 1, 3, 4, key="a")
    old_b = get(2, ABSENT, 5, 6, key="b")
    assert not check_history([bulk, new_a, old_b]).ok
    assert check_history([bulk, new_a, get(2, 2, 5, 6, key="b")]).ok
    both = Operation(3, OpKind.GET_MANY, "a", (), 7, 8, Outcome.OK, (1, 2), keys=("a", "b"))
    torn = Operation(3, OpKind.GET_MANY, "a", (), 7, 8, Outcome.OK, (1, ABSENT),
                     keys=("a", "b"))
    assert check_history([bulk, both]).ok
    assert not check_history([bulk, torn]).ok


def test_retried_write_is_rejected_when_applied_twice() -> None:
    """Exactly-once: a session write retried across a failover takes effect once."""
    retried = put(1, 5, 0, 20)  # first try at 0, the retry's answer at 20
    other = put(2, 6, 5, 6)
    reads = [get(3, 5, 1, 2), get(3, 6, 7, 8), get(3, 5, 21, 22)]
    assert not check_history([retried, other, *reads]).ok
    assert check_history([retried, other, *reads[:2]]).ok


def test_unknown_write_must_take_effect_when_its_cluster_time_is_known() -> None:
    """An UNKNOWN op with a ts was applied: it is not optional."""
    from dataclasses import replace

    applied = replace(put(1, 5, 0, None, outcome=Outcome.UNKNOWN), ts=10)
    read_absent = replace(get(2, ABSENT, 20, 21), ts=20)
    assert not check_history([applied, read_absent]).ok
    assert check_history([replace(applied, ts=None), read_absent]).ok


def incr(c: int, delta: int, s: float, e: float | None, result: Hashable = None,
         outcome: Outcome = Outcome.OK) -> Operation:
    return op(c, OpKind.INCR, (delta,), s, e, result, outcome)


def test_concurrent_increments_pass_when_each_sees_a_distinct_count() -> None:
    """Two overlapping incr of 1 from absent: results 1 and 2 in some order; a read sees 2."""
    assert Verdict.OK == verdict(incr(1, 1, 0, 3, 2), incr(2, 1, 1, 2, 1), get(3, 2, 4, 5))


def test_increment_counted_twice_is_rejected_when_one_incr_jumps() -> None:
    """One incr of 1 that returns 2 (applied twice, or on a lost count) is a violation."""
    assert Verdict.VIOLATION == verdict(put(1, 5, 0, 1), incr(2, 1, 2, 3, 7))
    assert Verdict.VIOLATION == verdict(incr(1, 1, 0, 1, 1), incr(2, 1, 2, 3, 1))
