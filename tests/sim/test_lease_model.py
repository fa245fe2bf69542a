"""The linearizability checker's lease model (concord.sim.kvmodel): each lease property the
simulator checks rejects the history that breaks it and passes the one that keeps it."""

from __future__ import annotations

from collections.abc import Hashable

from concord.sim.history import NOT_FOUND, OpKind, Operation, Outcome, Versioned, lease_key
from concord.sim.linearizability import ABSENT, check_history

K = "k"
L = 7  # the lease id of the grants below
LK = lease_key(L)


def at(
    kind: OpKind,
    key: str,
    args: tuple[Hashable, ...],
    start: float,
    end: float | None,
    ts: float | None,
    result: Hashable = None,
    outcome: Outcome = Outcome.OK,
    keys: tuple[str, ...] = (),
) -> Operation:
    return Operation(1, kind, key, args, start, end, outcome, result, keys=keys, ts=ts)


def grant(ts: float, ttl_ms: int = 100, lease: int = L) -> Operation:
    return at(OpKind.LEASE_GRANT, lease_key(lease), (ttl_ms,), ts, ts + 1, ts, lease)


def leased_put(value: int, ts: float, result: Hashable = None, lease: int = L,
               outcome: Outcome = Outcome.OK) -> Operation:
    return at(OpKind.PUT, K, (value, 0, lease), ts, ts + 1, ts, result, outcome,
              keys=(K, lease_key(lease)))


def get(result: Hashable, ts: float) -> Operation:
    return at(OpKind.GET, K, (), ts, ts + 1, ts, result)


def expire(ts: float, *leases: int) -> Operation:
    keys = tuple(lease_key(lease) for lease in leases or (L,))
    return at(OpKind.LEASE_EXPIRE, keys[0], leases or (L,), ts, ts, ts,
              keys=keys if len(keys) > 1 else ())


def lease_op(kind: OpKind, ts: float, result: Hashable, outcome: Outcome = Outcome.OK,
             end: float | None = -1.0) -> Operation:
    return at(kind, LK, (L,), ts, ts + 1 if end == -1.0 else end, ts, result, outcome)


def ok(*ops: Operation) -> bool:
    return check_history(ops).ok


def test_leased_key_is_gone_when_its_lease_is_revoked() -> None:
    """After a revoke answered with one key deleted, the key reads absent, and only then."""
    base = [grant(0), leased_put(5, 10), get(Versioned(5, 1), 20)]
    revoke = lease_op(OpKind.LEASE_REVOKE, 30, 1)
    assert ok(*base, revoke, get(ABSENT, 40))
    assert not ok(*base, revoke, get(Versioned(5, 1), 40))  # revoke left the key
    assert not ok(*base, lease_op(OpKind.LEASE_REVOKE, 30, 0), get(ABSENT, 40))  # wrong count


def test_leased_key_stays_until_the_expire_entry_when_the_deadline_passed() -> None:
    """Past the deadline the key is still there; the lease_expire entry removes it."""
    base = [grant(0, ttl_ms=100), leased_put(5, 10)]
    assert ok(*base, get(Versioned(5, 1), 150), expire(200), get(ABSENT, 210))
    assert not ok(*base, get(ABSENT, 150), expire(200))  # gone before its entry
    assert not ok(*base, expire(200), get(Versioned(5, 1), 210))  # the entry left it


def test_expire_entry_changes_nothing_when_the_lease_was_kept_alive() -> None:
    """A keepalive after the proposal moves the deadline: a later expire entry keeps it."""
    base = [grant(0, ttl_ms=100), leased_put(5, 10),
            lease_op(OpKind.LEASE_KEEPALIVE, 90, True)]
    assert ok(*base, expire(150), get(Versioned(5, 1), 160))
    assert not ok(*base, expire(150), get(ABSENT, 160))


def test_keepalive_is_rejected_when_it_keeps_an_expired_lease_alive() -> None:
    """Once the deadline passed a keepalive must answer not_found."""
    assert ok(grant(0, ttl_ms=100), lease_op(OpKind.LEASE_KEEPALIVE, 120, NOT_FOUND))
    assert not ok(grant(0, ttl_ms=100), lease_op(OpKind.LEASE_KEEPALIVE, 120, True))
    assert not ok(grant(0, ttl_ms=100), lease_op(OpKind.LEASE_KEEPALIVE, 50, NOT_FOUND))


def test_put_with_a_dead_lease_is_rejected_when_it_changed_the_key() -> None:
    """A put with a revoked lease answers not_found and leaves the key as it was."""
    dead = [grant(0), lease_op(OpKind.LEASE_REVOKE, 10, 0)]
    assert ok(*dead, leased_put(5, 20, NOT_FOUND), get(ABSENT, 30))
    assert not ok(*dead, leased_put(5, 20, NOT_FOUND), get(Versioned(5, 1), 30))
    assert not ok(*dead, leased_put(5, 20, None))  # acknowledged with a dead lease
    assert not ok(grant(0), leased_put(5, 20, NOT_FOUND))  # refused with a live one


def test_lease_ids_are_rejected_when_granted_twice() -> None:
    """Two grants answered with one id (an id reused) cannot be linearized."""
    assert ok(grant(0), grant(10, lease=8))
    assert not ok(grant(0), grant(10))


def test_unknown_revoke_passes_when_it_may_or_may_not_have_taken_effect() -> None:
    """A revoke without an answer and without an applied entry: either read is fine."""
    base = [grant(0, ttl_ms=1000), leased_put(5, 10),
            lease_op(OpKind.LEASE_REVOKE, 20, None, Outcome.UNKNOWN, end=None)]
    unknown = [base[0], base[1], Operation(1, OpKind.LEASE_REVOKE, LK, (L,), 20, None,
                                           Outcome.UNKNOWN)]
    assert ok(*unknown, get(ABSENT, 40))
    assert ok(*unknown, get(Versioned(5, 1), 40))
    # With its cluster time known it took effect: the key is gone after it.
    assert not ok(*base, get(Versioned(5, 1), 40))


def test_put_without_the_lease_detaches_the_key_when_the_lease_is_revoked_later() -> None:
    """A plain put over a leased key detaches it: the revoke deletes nothing."""
    plain = at(OpKind.PUT, K, (6,), 20, 21, 20)
    base = [grant(0), leased_put(5, 10), plain]
    assert ok(*base, lease_op(OpKind.LEASE_REVOKE, 30, 0), get(Versioned(6, 2), 40))
    assert not ok(*base, lease_op(OpKind.LEASE_REVOKE, 30, 1), get(ABSENT, 40))
