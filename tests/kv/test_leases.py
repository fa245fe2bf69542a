"""Counters (incr/decr) and leases shared by several keys: kv/leases.py, machine hooks."""

from __future__ import annotations

import pytest

from concord.kv import KvStateMachine
from concord.kv.record import ChangeType
from tests.kv.helpers import Driver


@pytest.fixture
def d(sm: KvStateMachine) -> Driver:
    return Driver(sm)


def test_incr_counts_from_zero_and_keeps_the_first_ttl_when_incremented(d: Driver) -> None:
    """incr creates the key at delta with the ttl; later increments keep its expiry."""
    assert 1 == d.do("incr", {"key": "rate", "ttl": 1}).result["value"]
    d.ts_ms += 600
    assert 3 == d.do("incr", {"key": "rate", "delta": 2, "ttl": 1}).result["value"]
    d.ts_ms += 500  # 1100 ms after creation: the window is over
    assert 1 == d.do("incr", {"key": "rate", "ttl": 1}).result["value"]
    assert -4 == d.do("decr", {"key": "rate", "delta": 5}).result["value"]


def test_incr_is_refused_when_the_value_is_not_an_integer(d: Driver) -> None:
    """A string (or bool) value gets invalid_request and is left as it was."""
    d.do("put", {"key": "s", "value": "x"})
    d.do("put", {"key": "b", "value": True})
    assert "invalid_request" == d.do("incr", {"key": "s"}).result["error"]
    assert "invalid_request" == d.do("incr", {"key": "b"}).result["error"]
    assert "x" == d.sm.get("s", d.ts_ms)["value"]


def test_incr_is_refused_when_it_overflows_64_bits(d: Driver) -> None:
    d.do("put", {"key": "n", "value": (1 << 63) - 1})
    assert "invalid_request" == d.do("incr", {"key": "n"}).result["error"]


def test_lease_expiry_deletes_every_key_when_not_kept_alive(d: Driver) -> None:
    """Keys share a lease; a lease_expire entry at or after the deadline deletes them all."""
    lease = d.do("lease_grant", {"ttl": 1}).result["lease"]
    d.do("put", {"key": "svc/a", "value": "10.0.0.1", "lease": lease})
    d.do("put", {"key": "svc/b", "value": "10.0.0.2", "lease": lease})
    d.ts_ms += 999
    assert d.sm.expiry_command(d.ts_ms) is None
    d.ts_ms += 1
    command = d.sm.expiry_command(d.ts_ms)
    assert command is not None
    applied = d.raw(command)
    assert [(ChangeType.EXPIRE, "svc/a"), (ChangeType.EXPIRE, "svc/b")] == [
        (c.type, c.key) for c in applied.changes]
    assert "not_found" == d.do("lease_keepalive", {"lease": lease}).result["error"]
    assert [] == d.sm.leases(d.ts_ms)


def test_keepalive_moves_the_deadline_when_the_lease_is_live(d: Driver) -> None:
    """A keepalive entry sets the deadline to its own timestamp plus the ttl."""
    lease = d.do("lease_grant", {"ttl": 1}).result["lease"]
    d.do("put", {"key": "k", "value": 1, "lease": lease})
    d.ts_ms += 900
    d.do("lease_keepalive", {"lease": lease})
    d.ts_ms += 900
    assert d.sm.expiry_command(d.ts_ms) is None
    assert [{"lease": lease, "ttl": 1.0, "remaining": 0.1, "keys": ["k"]}] == d.sm.leases(d.ts_ms)


def test_a_stale_lease_expire_changes_nothing_when_the_lease_was_kept_alive(d: Driver) -> None:
    """The leader's proposal is judged at apply time: a keepalive in between wins."""
    lease = d.do("lease_grant", {"ttl": 1}).result["lease"]
    d.do("put", {"key": "k", "value": 1, "lease": lease})
    d.ts_ms += 1000
    command = d.sm.expiry_command(d.ts_ms)
    assert command is not None
    d.do("lease_keepalive", {"lease": lease})  # refused: the lease is due at this entry
    applied = d.raw(command)
    assert 1 == len(applied.changes)


def test_revoke_deletes_only_keys_still_attached_when_one_was_overwritten(d: Driver) -> None:
    """A put without the lease detaches its key; revoke deletes the others."""
    lease = d.do("lease_grant", {"ttl": 10}).result["lease"]
    d.do("put", {"key": "a", "value": 1, "lease": lease})
    d.do("put", {"key": "b", "value": 1, "lease": lease})
    d.do("put", {"key": "b", "value": 2})
    revoked = d.do("lease_revoke", {"lease": lease})
    assert 1 == revoked.result["deleted"]
    assert "not_found" == d.sm.get("a", d.ts_ms).get("error")
    assert 2 == d.sm.get("b", d.ts_ms)["value"]


def test_put_with_an_unknown_lease_is_refused_and_changes_nothing(d: Driver) -> None:
    assert "not_found" == d.do("put", {"key": "k", "value": 1, "lease": 99}).result["error"]
    assert "not_found" == d.sm.get("k", d.ts_ms).get("error")


def test_leases_survive_a_snapshot_with_their_keys(d: Driver) -> None:
    """Snapshot format 2 carries leases; the restored machine expires the same keys."""
    lease = d.do("lease_grant", {"ttl": 1}).result["lease"]
    d.do("put", {"key": "k", "value": 1, "lease": lease})
    copy = KvStateMachine()
    copy.restore(d.sm.snapshot())
    assert d.sm.state_hash() == copy.state_hash()
    assert d.sm.leases(d.ts_ms) == copy.leases(d.ts_ms)
    assert d.sm.expiry_command(d.ts_ms + 1000) == copy.expiry_command(d.ts_ms + 1000)


def test_lease_state_changes_the_state_hash_when_granted(d: Driver) -> None:
    """Replicas that disagree on leases must not agree on the hash."""
    before = d.sm.data_hash()
    d.do("lease_grant", {"ttl": 1})
    assert before != d.sm.data_hash()


def test_a_lease_id_is_the_index_of_its_grant_entry(d: Driver) -> None:
    """docs/protocol.md "Leases": the id is the Raft index of the grant, so never reused."""
    d.do("put", {"key": "a", "value": 1})
    first = d.do("lease_grant", {"ttl": 5})
    assert first.result["lease"] == d.sm.applied_index
    d.do("lease_revoke", {"lease": first.result["lease"]})
    second = d.do("lease_grant", {"ttl": 5})
    assert second.result["lease"] == d.sm.applied_index != first.result["lease"]
