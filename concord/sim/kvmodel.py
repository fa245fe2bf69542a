"""
The sequential model of the key-value store that linearizability is checked against
(concord.kv's semantics, docs/formats/kv.md): per key a value, a version (1 on create,
+1 per put, 0 when absent) and an expiry time in cluster milliseconds; TTL expiry by
the leader's entry timestamps; conditional puts on a value, on absence or on a version;
atomic multi-key puts, deletes and reads; counters (incr); leases (grant, keepalive,
revoke, puts attached to a lease, the leader's lease_expire entries).

A model state is `(clock, cells)`: `clock` the cluster time of the last operation with
a known time (`Operation.ts`; operations must take effect in non-decreasing cluster
time, as log entries are stamped), `cells` one `(value, version, expires_at_ms, lease)`
per key of the checked component, in `slots` order (`lease`: the lease the key is
attached to, 0 for none). A version of None is unknown (a key with an initial value
given to the checker). A lease is a cell too, at its pseudo-key (`lease_key`): ABSENT
before its grant, `("lease", ttl_ms)` with its deadline as `expires_at_ms` while it
exists (live while the deadline is after the clock), `GONE` once revoked or expired (an
id is never granted twice).

Pure and deterministic.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from concord.sim.history import (
    ABSENT,
    LEASE_KINDS,
    NOT_FOUND,
    Operation,
    OpKind,
    Outcome,
    Version,
    Versioned,
    lease_key,
)

__all__ = ["Cell", "State", "initial_state", "step"]

Cell = tuple[Hashable, int | None, float, int]
State = tuple[float, tuple[Cell, ...]]

_EMPTY: Cell = (ABSENT, 0, 0, 0)
#: A lease revoked or expired: its id stays taken.
_GONE: Cell = (("lease", "gone"), 0, 0, 0)


def initial_state(values: Sequence[Hashable]) -> State:
    """The state of keys holding `values` (ABSENT: no key), with no expiry."""
    return (0.0, tuple(_EMPTY if v is ABSENT else (v, None, 0, 0) for v in values))


def _live(cell: Cell, now: float) -> Cell:
    """The cell as a read at `now` sees it (an expired key is absent)."""
    expires = cell[2]
    if cell[0] is not ABSENT and expires and expires <= now:
        return _EMPTY
    return cell


def _put(old: Cell, value: Hashable, ttl_ms: Hashable, now: float, lease: int = 0) -> Cell:
    if old[0] is ABSENT:
        version: int | None = 1
    else:
        version = None if old[1] is None else old[1] + 1
    expires = now + ttl_ms if isinstance(ttl_ms, int) and ttl_ms > 0 else 0
    return (value, version, expires, lease)


def _lease_live(cells: tuple[Cell, ...], slots: Mapping[str, int], lease: int, now: float) -> bool:
    """Whether lease `lease` exists and its deadline is after `now`."""
    i = slots.get(lease_key(lease))
    if i is None:
        return False
    cell = cells[i]
    return cell[0] is not ABSENT and cell[2] > now  # a GONE lease's deadline is 0


def _read_matches(cell: Cell, result: Hashable) -> bool:
    if isinstance(result, Versioned):
        return cell[0] == result.value and (cell[1] is None or cell[1] == result.version)
    return cell[0] == result


def _condition_holds(cell: Cell, expected: Hashable) -> bool:
    if isinstance(expected, Version):
        return cell[1] is not None and (cell[1] if cell[0] is not ABSENT else 0) == expected.version
    if expected is ABSENT:
        return cell[0] is ABSENT
    return cell[0] is not ABSENT and cell[0] == expected


def step(state: State, op: Operation, slots: Mapping[str, int]) -> tuple[bool, State]:
    """
    Apply `op` to `state`.

    Returns:
        (legal, new_state): legal is False when `op` cannot take effect here (its cluster
        time is before the state's) or completed OK with a result the model cannot
        produce from `state`.
    """
    clock, cells = state
    if op.ts is not None:
        if op.ts < clock:
            return False, state
        clock = op.ts
    check = op.outcome is Outcome.OK
    kind = op.kind
    if kind in (OpKind.PUT_MANY, OpKind.DELETE_MANY, OpKind.GET_MANY):
        return _step_many(clock, cells, op, slots, check)
    if kind in LEASE_KINDS:
        return _step_lease(clock, cells, op, slots, check)
    i = slots[op.key]
    cell = _live(cells[i], clock)
    new = cell
    legal = True
    if kind is OpKind.GET:
        legal = not check or _read_matches(cell, op.result)
    elif kind is OpKind.PUT:
        lease = op.args[2] if len(op.args) > 2 else 0
        assert isinstance(lease, int)
        if lease and not _lease_live(cells, slots, lease, clock):
            legal = not check or op.result == NOT_FOUND
        else:
            legal = not check or op.result != NOT_FOUND
            new = _put(cell, op.args[0], op.args[1] if len(op.args) > 1 else 0, clock, lease)
    elif kind is OpKind.INCR:
        value = (0 if cell[0] is ABSENT else cell[0]) + op.args[0]  # type: ignore[operator]
        legal = not check or op.result == value
        if cell[0] is ABSENT:
            new = (value, 1, 0, 0)
        else:  # a counter keeps its expiry and its lease
            new = (value, None if cell[1] is None else cell[1] + 1, cell[2], cell[3])
    elif kind is OpKind.DELETE:
        legal = not check or op.result == (cell[0] is not ABSENT)
        new = _EMPTY
    elif kind is OpKind.PUT_IF:
        # The condition is checked before the lease (as concord.kv applies put_if).
        held = _condition_holds(cell, op.args[0])
        lease = op.args[3] if len(op.args) > 3 else 0
        assert isinstance(lease, int)
        if held and lease and not _lease_live(cells, slots, lease, clock):
            legal = not check or op.result == NOT_FOUND
        else:
            legal = not check or op.result == held
            if held:
                new = _put(cell, op.args[1], op.args[2] if len(op.args) > 2 else 0, clock,
                           lease)
    else:  # DELETE_IF
        held = _condition_holds(cell, op.args[0]) and cell[0] is not ABSENT
        legal = not check or op.result == held
        if held:
            new = _EMPTY
    if new is cells[i] or not legal:
        return legal, (clock, cells)
    return True, (clock, cells[:i] + (new,) + cells[i + 1 :])


def _step_many(
    clock: float, cells: tuple[Cell, ...], op: Operation, slots: Mapping[str, int], check: bool
) -> tuple[bool, State]:
    now = [_live(cells[slots[k]], clock) for k in op.keys]
    if op.kind is OpKind.GET_MANY:
        legal = not check or op.result == tuple(c[0] for c in now)
        return legal, (clock, cells)
    out = list(cells)
    if op.kind is OpKind.DELETE_MANY:
        deleted = sum(1 for c in now if c[0] is not ABSENT)
        if check and op.result != deleted:
            return False, (clock, cells)
        for k in op.keys:
            out[slots[k]] = _EMPTY
    else:  # PUT_MANY
        values, ttl_ms = op.args
        assert isinstance(values, tuple)
        for k, cell, value in zip(op.keys, now, values):
            out[slots[k]] = _put(cell, value, ttl_ms, clock)
    return True, (clock, tuple(out))


def _drop_lease(cells: list[Cell], slots: Mapping[str, int], lease: int, clock: float) -> int:
    """Remove a lease and delete its keys; returns how many of them were live."""
    deleted = 0
    for i, cell in enumerate(cells):
        if cell[3] == lease:
            deleted += _live(cell, clock)[0] is not ABSENT
            cells[i] = _EMPTY
    cells[slots[lease_key(lease)]] = _GONE
    return deleted


def _step_lease(
    clock: float, cells: tuple[Cell, ...], op: Operation, slots: Mapping[str, int], check: bool
) -> tuple[bool, State]:
    """Grant, keepalive, revoke, or the leader's lease_expire entry."""
    if op.kind is OpKind.LEASE_EXPIRE:
        out = list(cells)
        for lease in op.args:
            assert isinstance(lease, int)
            i = slots.get(lease_key(lease))
            # Dropped only if still due at the entry's time (a late or duplicate proposal,
            # or one for a lease kept alive since, changes nothing).
            if i is not None and out[i][0] not in (ABSENT, _GONE[0]) and out[i][2] <= clock:
                _drop_lease(out, slots, lease, clock)
        return True, (clock, tuple(out))
    if op.kind is OpKind.LEASE_GRANT:
        if not isinstance(op.result, int) or isinstance(op.result, bool):
            return True, (clock, cells)  # an id nobody learned: no key can attach to it
        i = slots[lease_key(op.result)]
        if cells[i][0] is not ABSENT:
            return False, (clock, cells)  # an id granted twice
        ttl_ms = op.args[0]
        assert isinstance(ttl_ms, int)
        granted: Cell = (("lease", ttl_ms), 0, clock + ttl_ms, 0)
        return True, (clock, cells[:i] + (granted,) + cells[i + 1 :])
    lease = op.args[0]
    assert isinstance(lease, int)
    if not _lease_live(cells, slots, lease, clock):
        return not check or op.result == NOT_FOUND, (clock, cells)
    out = list(cells)
    if op.kind is OpKind.LEASE_KEEPALIVE:
        i = slots[lease_key(lease)]
        mark = out[i][0]
        assert isinstance(mark, tuple) and isinstance(mark[1], int)
        out[i] = (mark, 0, clock + mark[1], 0)
        legal = not check or op.result is True
    else:  # LEASE_REVOKE
        deleted = _drop_lease(out, slots, lease, clock)
        legal = not check or op.result == deleted
    if not legal:
        return False, (clock, cells)
    return True, (clock, tuple(out))
