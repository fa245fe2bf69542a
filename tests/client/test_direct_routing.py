"""
Writes and strong reads routed to a node's direct endpoint (concord.client.direct): the
plan probes `status` once per client endpoint, then sends there; a refusing direct
endpoint sends the call back through the client endpoint (pure: `drive` over a fake).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping

from concord.client.direct import DirectRoutes, eligible
from concord.client.link import REFUSED, Reply
from concord.client.plan import Attempt, CallPlan, Policy, Routing, drive, envelope

POLICY = Policy(attempt_timeout_s=0.05, retries=1, max_redirects=5, backoff_s=0.01,
                max_backoff_s=0.01, direct=True)
DOOR = "tcp://127.0.0.1:7400"
DIRECT = "tcp://127.0.0.1:7700"


def build(op: str, request_id: int, args: Mapping[str, object]) -> dict[str, object]:
    return envelope(op, request_id, args, None, None)


class Node:
    """A fake node: `status` names DIRECT; the direct endpoint refuses while `down`."""

    def __init__(self, direct_down: bool = False) -> None:
        self.sent: list[Attempt] = []
        self.direct_down = direct_down

    def __call__(self, attempt: Attempt) -> Reply:
        self.sent.append(attempt)
        rid = attempt.request_id
        if attempt.msg["op"] == "status":
            return {"id": rid, "ok": True, "direct": DIRECT}
        if attempt.to == DIRECT and self.direct_down:
            return REFUSED
        return {"id": rid, "ok": True, "revision": 1, "value": 1}


def call(routing: Routing, op: str, args: Mapping[str, object], node: Node,
         policy: Policy = POLICY) -> dict[str, object]:
    return drive(CallPlan(op, dict(args), None, routing, policy, itertools.count(1), build, 5.0,
                          time.monotonic()), node)


def test_writes_go_direct_after_one_probe_when_the_node_names_one() -> None:
    routing, node = Routing((DOOR,)), Node()
    call(routing, "put", {"key": "k", "value": 1}, node)
    call(routing, "delete", {"key": "k"}, node)
    call(routing, "get", {"key": "k", "consistency": "strong"}, node)  # reads: the door
    assert [("status", DOOR), ("put", DIRECT), ("delete", DIRECT), ("get", DOOR)] == [
        (a.msg["op"], a.to) for a in node.sent]
    assert [DOOR] * 4 == [a.target for a in node.sent]  # routing stays by client endpoint


def test_call_goes_through_the_door_when_the_direct_endpoint_refuses() -> None:
    routing, node = Routing((DOOR,)), Node(direct_down=True)
    assert 1 == call(routing, "put", {"key": "k", "value": 1}, node)["revision"]
    assert [("status", DOOR), ("put", DIRECT), ("put", DOOR)] == [
        (a.msg["op"], a.to) for a in node.sent]
    call(routing, "put", {"key": "k", "value": 2}, node)  # forgotten for RETRY_S: the door
    assert ("put", DOOR) == (node.sent[-1].msg["op"], node.sent[-1].to)


def test_nothing_is_probed_when_direct_is_off() -> None:
    routing, node = Routing((DOOR,)), Node()
    call(routing, "put", {"key": "k", "value": 1}, node, dataclasses.replace(POLICY, direct=False))
    assert [("put", DOOR)] == [(a.msg["op"], a.to) for a in node.sent]


def test_a_node_without_a_direct_endpoint_is_probed_once() -> None:
    routes = DirectRoutes()
    assert (None, True) == routes.route(DOOR, 0.0)
    assert (None, False) == routes.route(DOOR, 0.0)  # one probe at a time
    routes.learned(DOOR, {"ok": True, "direct": None}, 0.0)
    assert (None, False) == routes.route(DOOR, 100.0)
    assert eligible("put", {}) and eligible("put_many", {}) and eligible("incr", {})
    assert not eligible("get", {"consistency": "strong"}) and not eligible("status", {})
