"""The retry plan pinned to one endpoint, and its raw mode (pure: `drive` over a fake exchange)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping

import pytest

from concord.client.plan import Attempt, CallPlan, Policy, Routing, drive, envelope
from concord.errors import NotLeaderError, RequestTimeoutError, UnknownResultError

POLICY = Policy(attempt_timeout_s=0.01, retries=0, max_redirects=5, backoff_s=0.01, max_backoff_s=0.01)
PINNED = "tcp://127.0.0.1:1"


def build(op: str, request_id: int, args: Mapping[str, object]) -> dict[str, object]:
    return envelope(op, request_id, args, None, None)


def as_given(op: str, request_id: int, args: Mapping[str, object]) -> dict[str, object]:
    return {**args, "id": request_id}


class Script:
    """Answers attempts from a list (None: silence) and records where each went."""

    def __init__(self, replies: list[dict[str, object] | None] | None = None) -> None:
        # None: silence for ever (the fake returns at once; the plan's deadline ends it).
        self.replies: Iterator[dict[str, object] | None] = (
            iter(replies) if replies is not None else itertools.repeat(None))
        self.sent: list[Attempt] = []

    def __call__(self, attempt: Attempt) -> dict[str, object] | None:
        self.sent.append(attempt)
        reply = next(self.replies)
        return None if reply is None else {**reply, "id": attempt.request_id}


def plan(op: str, args: Mapping[str, object], *, raw: bool = False, timeout_s: float = 5.0) -> CallPlan:
    routing = Routing(("tcp://127.0.0.1:2", "tcp://127.0.0.1:3"))
    return CallPlan(op, args, None, routing, POLICY, itertools.count(1), as_given if raw else build,
                    timeout_s, time.monotonic(), pinned=PINNED, raw=raw)


def test_pinned_read_is_resent_to_its_endpoint_when_silent() -> None:
    """Silence is resent to the pinned endpoint with a fresh id; the routing's endpoints are never used."""
    script = Script([None, None, {"ok": True, "role": "leader"}])
    reply = drive(plan("status", {}), script)
    assert "leader" == reply["role"]
    assert [PINNED] * 3 == [a.target for a in script.sent]
    assert [1, 2, 3] == [a.request_id for a in script.sent]


def test_pinned_refusal_is_final_when_not_leader_has_a_hint() -> None:
    """A pinned call does not follow a leader hint: not_leader is raised."""
    script = Script([{"ok": False, "error": "not_leader", "message": "m", "leader": "tcp://h:9"}])
    with pytest.raises(NotLeaderError):
        drive(plan("status", {}), script)
    assert 1 == len(script.sent)


def test_pinned_write_without_session_is_never_resent_when_silent() -> None:
    """A silent write with no session ends UNKNOWN at once (resending could apply it twice)."""
    script = Script([None, {"ok": True}])
    with pytest.raises(UnknownResultError):
        drive(plan("put", {"key": "k", "value": 1}), script)
    assert 1 == len(script.sent)


def test_raw_plan_returns_error_replies_and_sends_the_map_as_given_when_answered() -> None:
    """Raw: no wire-table check, no timeout_ms added, same id on every attempt, the error reply returned."""
    script = Script([None, {"ok": False, "error": "invalid_request", "message": "m"}])
    p = CallPlan("bogus", {"op": "bogus", "x": 1}, None, Routing((PINNED,)), POLICY, itertools.repeat(7),
                 as_given, 5.0, time.monotonic(), pinned=PINNED, raw=True)
    reply = drive(p, script)
    assert "invalid_request" == reply["error"]
    assert [{"op": "bogus", "x": 1, "id": 7}] * 2 == [a.msg for a in script.sent]


def test_raw_plan_times_out_when_never_answered() -> None:
    """Raw silence until the deadline raises RequestTimeoutError."""
    script = Script()
    with pytest.raises(RequestTimeoutError):
        drive(plan("status", {}, raw=True, timeout_s=0.03), script)
    assert script.sent and {PINNED} == {a.target for a in script.sent}


def test_raw_plan_refused_when_not_pinned() -> None:
    """Raw mode only makes sense against one endpoint."""
    with pytest.raises(ValueError):
        CallPlan("status", {}, None, Routing((PINNED,)), POLICY, itertools.count(1), as_given, 1.0,
                 time.monotonic(), raw=True)


def routed(op: str, args: Mapping[str, object], routing: Routing) -> CallPlan:
    return CallPlan(op, args, None, routing, POLICY, itertools.count(1), build, 5.0, time.monotonic())


def test_later_calls_go_to_the_leader_when_a_forwarded_write_names_it() -> None:
    """An ok write naming `leader_client` (a follower forwarded it) moves the routing
    there, as a not_leader hint does; the next call goes straight to it."""
    routing = Routing(("tcp://127.0.0.1:2",))
    script = Script([{"ok": True, "revision": 4, "leader_client": "127.0.0.1:9"}, {"ok": True}])
    first = drive(routed("put", {"key": "k", "value": 1}, routing), script)
    drive(routed("put", {"key": "k", "value": 2}, routing), script)
    assert ["tcp://127.0.0.1:2", "tcp://127.0.0.1:9"] == [a.target for a in script.sent]
    assert "tcp://127.0.0.1:9" == routing.leader
    assert "leader_client" not in first  # the result does not depend on the route taken


def test_routing_stays_on_the_answering_node_when_hints_are_off() -> None:
    """max_redirects 0 (a client that follows no hint) ignores `leader_client` too."""
    routing = Routing(("tcp://127.0.0.1:2",))
    no_hints = Policy(attempt_timeout_s=0.01, retries=0, max_redirects=0, backoff_s=0.01,
                      max_backoff_s=0.01)
    p = CallPlan("put", {"key": "k", "value": 1}, None, routing, no_hints, itertools.count(1),
                 build, 5.0, time.monotonic())
    drive(p, Script([{"ok": True, "revision": 4, "leader_client": "tcp://127.0.0.1:9"}]))
    assert "tcp://127.0.0.1:2" == routing.leader


def test_routing_stays_on_the_answering_node_when_a_read_reply_names_a_leader() -> None:
    """Reads never move by `leader_client` (a status reply carries it as a field)."""
    routing = Routing(("tcp://127.0.0.1:2",))
    drive(routed("status", {}, routing), Script([{"ok": True, "leader_client": "tcp://127.0.0.1:9"}]))
    assert "tcp://127.0.0.1:2" == routing.leader
