"""The connection state of a client DEALER (concord.client.link) and what the retry plan makes of it. Pure."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping

import pytest
import zmq

from concord.client.link import REFUSED, Conn, Link, Moves, Reply, Route
from concord.client.plan import Attempt, CallPlan, Policy, Routing, SessionSlots, drive, envelope
from concord.errors import RequestTimeoutError, UnknownResultError

UP = zmq.EVENT_HANDSHAKE_SUCCEEDED
DROPPED = zmq.EVENT_DISCONNECTED
CONNECT_FAILED = zmq.EVENT_CONNECT_RETRIED
A, B, C = "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"


def test_requests_held_until_connected_then_sent_when_handshake_succeeds() -> None:
    """A new socket holds requests (libzmq gets none) until its first handshake."""
    link = Link()
    assert [Route.HOLD, Route.HOLD] == [link.route(1), link.route(2)]
    assert Moves(send=[1, 2]) == link.on_event(UP)
    assert Conn.UP == link.conn
    assert Route.SEND == link.route(3)


def test_held_requests_refused_when_first_connect_fails() -> None:
    """A refused connect: what was held was never sent, so it is refused; later requests too."""
    link = Link()
    link.route(1)
    assert Moves(refused=[1]) == link.on_event(CONNECT_FAILED)
    assert Route.REFUSE == link.route(2)


def test_sent_requests_end_as_silence_when_connection_drops() -> None:
    """A drop ends what was sent as silence (it may have been applied), at once."""
    link = Link()
    link.on_event(UP)
    link.route(1)
    link.route(2)
    link.done(2)  # answered
    assert Moves(silent=[1]) == link.on_event(DROPPED)
    assert Moves() == link.on_event(CONNECT_FAILED)  # libzmq's reconnects fail: nothing left
    assert Route.REFUSE == link.route(3)
    assert Moves() == link.on_event(UP)  # reconnected (the node is back)
    assert Route.SEND == link.route(4)


def test_request_not_taken_by_socket_is_forgotten_when_unsent() -> None:
    """zmq.Again on a SEND: the request leaves the link (the transport refuses it)."""
    link = Link()
    link.on_event(UP)
    link.route(1)
    link.unsent(1)
    assert Moves() == link.on_event(DROPPED)


def test_requests_fail_with_reason_when_handshake_cannot_succeed() -> None:
    """A CURVE handshake that cannot succeed fails what is on the link and every later
    request with its reason (not a refusal: retrying elsewhere cannot help), until one succeeds."""
    link = Link()
    link.route(1)
    assert [1] == link.fail_all("wrong server key")
    link.on_event(DROPPED)
    assert (Route.FAIL, "wrong server key") == (link.route(2), link.why)
    link.on_event(UP)
    assert (Route.SEND, None) == (link.route(3), link.why)


# -- the plan ---------------------------------------------------------------------------


def build(op: str, request_id: int, args: Mapping[str, object]) -> dict[str, object]:
    return envelope(op, request_id, args, None, None)


class Net:
    """A fake exchange: each endpoint's next replies (REFUSED, None: silence, or a map)."""

    def __init__(self, **script: list[Reply]) -> None:
        self.script = {f"tcp://127.0.0.1:{k[1:]}": list(v) for k, v in script.items()}
        self.sent: list[Attempt] = []

    def __call__(self, attempt: Attempt) -> Reply:
        self.sent.append(attempt)
        reply = self.script[attempt.target].pop(0)
        return {**reply, "id": attempt.request_id} if isinstance(reply, dict) else reply


def make_plan(op: str, args: Mapping[str, object], policy: Policy, session: bool = False,
              routing: Routing | None = None, timeout_s: float = 5.0) -> CallPlan:
    ticket = SessionSlots("c", 0).take() if session else None
    return CallPlan(op, args, ticket, routing or Routing((A, B, C)), policy, itertools.count(1), build,
                    timeout_s, time.monotonic())


FAST = Policy(attempt_timeout_s=0.25, retries=4, max_redirects=5, backoff_s=0.001, max_backoff_s=0.001,
              attempt_growth=2.0)
OK: dict[str, object] = {"ok": True, "revision": 1}
NOT_LEADER_A: dict[str, object] = {"ok": False, "error": "not_leader", "message": "m", "leader": A}


def test_write_without_session_sent_elsewhere_when_refused() -> None:
    """Refused means not sent: even a write without a session may go to the next endpoint."""
    net = Net(p1=[REFUSED], p2=[OK])
    assert 1 == drive(make_plan("put", {"key": "k", "value": 1}, FAST), net)["revision"]
    assert [A, B] == [a.target for a in net.sent]


def test_write_without_session_not_resent_when_silent() -> None:
    """Silence (sent, maybe applied) keeps its meaning: UnknownResultError, no resend."""
    net = Net(p1=[None], p2=[OK])
    with pytest.raises(UnknownResultError):
        drive(make_plan("put", {"key": "k", "value": 1}, FAST), net)
    assert [A] == [a.target for a in net.sent]


def test_hint_to_down_endpoint_not_followed_when_follower_names_dead_leader() -> None:
    """After A refused, B's hint naming A is no hint: C is tried next, not A."""
    net = Net(p1=[REFUSED], p2=[NOT_LEADER_A], p3=[OK])
    drive(make_plan("put", {"key": "k", "value": 1}, FAST, session=True), net)
    assert [A, B, C] == [a.target for a in net.sent]


def test_hint_to_silent_endpoint_not_followed_when_same_call() -> None:
    """A session write silent at A, then B names A: C is tried (A comes back in rotation)."""
    net = Net(p1=[None, OK], p2=[NOT_LEADER_A], p3=[NOT_LEADER_A])
    drive(make_plan("put", {"key": "k", "value": 1}, FAST, session=True), net)
    assert [A, B, C, A] == [a.target for a in net.sent]
    assert 1 == len({a.msg["seq"] for a in net.sent})


def test_waits_double_when_attempts_silent() -> None:
    """The default schedule: 0.25 s, then twice as long after each silent attempt."""
    net = Net(p1=[None, None, OK])
    drive(make_plan("get", {"key": "k"}, FAST, routing=Routing((A,))), net)
    assert [0.25, 0.5, 1.0] == [a.wait_s for a in net.sent]
    assert [100, 350, 700] == [a.msg["timeout_ms"] for a in net.sent]


def test_waits_fixed_when_growth_is_one() -> None:
    """A given attempt_timeout_s (growth 1): every attempt waits as long."""
    fixed = Policy(attempt_timeout_s=0.25, retries=4, max_redirects=5, backoff_s=0.001, max_backoff_s=0.001)
    net = Net(p1=[None, None, OK])
    drive(make_plan("get", {"key": "k"}, fixed, routing=Routing((A,))), net)
    assert [0.25] * 3 == [a.wait_s for a in net.sent]


def test_read_last_attempt_waits_rest_of_deadline_when_retries_spent() -> None:
    """retries=1: the second (last) attempt of a read waits the rest of the deadline."""
    policy = Policy(attempt_timeout_s=0.25, retries=1, max_redirects=5, backoff_s=0.001, max_backoff_s=0.001,
                    attempt_growth=2.0)
    net = Net(p1=[None, None])
    with pytest.raises(RequestTimeoutError):
        drive(make_plan("get", {"key": "k"}, policy, routing=Routing((A,)), timeout_s=30.0), net)
    assert 0.25 == net.sent[0].wait_s and net.sent[1].wait_s > 29.0


def test_refused_everywhere_raises_timeout_naming_endpoint_when_deadline_passes() -> None:
    """Every endpoint down: the call backs off between refusals and ends at its deadline."""
    net = Net(p1=[REFUSED] * 1000, p2=[REFUSED] * 1000, p3=[REFUSED] * 1000)
    with pytest.raises(RequestTimeoutError, match="cannot connect to tcp://127.0.0.1"):
        drive(make_plan("get", {"key": "k"}, FAST, timeout_s=0.05), net)


@pytest.mark.parametrize("op, args", [("put", {"key": "k", "value": 1}), ("transfer_leader", {})])
def test_one_attempt_waits_whole_deadline_when_op_never_resent(op: str, args: dict[str, object]) -> None:
    """A write without a session or an admin op cannot be resent after silence: its
    attempt waits the rest of the deadline, not the short first wait."""
    net = Net(p1=[OK])
    drive(make_plan(op, args, FAST, timeout_s=30.0), net)
    timeout_ms = net.sent[0].msg["timeout_ms"]
    assert net.sent[0].wait_s > 29.0 and isinstance(timeout_ms, int) and timeout_ms > 29_000
