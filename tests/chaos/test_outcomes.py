"""How the chaos clients classify replies into ok / fail / unknown outcomes."""

from __future__ import annotations

from concord.chaos.clients import classify
from concord.sim.linearizability import ABSENT, Outcome


def test_no_reply_is_unknown_when_the_op_is_a_write() -> None:
    """A write without a reply may have been applied: unknown; a read without one: fail."""
    assert Outcome.UNKNOWN == classify("put", None)[0]
    assert Outcome.FAIL == classify("get", None)[0]


def test_condition_failed_is_an_ok_false_when_the_op_is_a_cas() -> None:
    """condition_failed completes a put_if / delete_if with result False."""
    reply = {"id": 1, "ok": False, "error": "condition_failed"}
    assert (Outcome.OK, False) == classify("put_if", reply)[:2]
    assert (Outcome.OK, False) == classify("delete_if", reply)[:2]


def test_redirects_are_definite_failures_when_no_leader_took_the_op() -> None:
    """not_leader / no_leader: nothing was applied."""
    for error in ("not_leader", "no_leader"):
        assert Outcome.FAIL == classify("put", {"ok": False, "error": error})[0]


def test_server_timeout_is_unknown_when_the_op_is_a_write() -> None:
    """A timeout error reply (leadership lost with the entry pending) is unknown."""
    assert Outcome.UNKNOWN == classify("delete", {"ok": False, "error": "timeout"})[0]


def test_not_found_reads_absent_when_the_key_does_not_exist() -> None:
    """A get answered not_found observed the absent register."""
    assert (Outcome.OK, ABSENT) == classify("get", {"ok": False, "error": "not_found"})[:2]
    assert (Outcome.OK, 7) == classify("get", {"ok": True, "value": 7})[:2]
    assert (Outcome.OK, True) == classify("delete", {"ok": True, "deleted": True})[:2]
