"""
Dead nodes are left at once, live but slow ones are not (concord.client.link and the
retry plan): over the real front door, the sync and asyncio clients alike.

The waits are set so that, without dead-node detection, each scenario fails instead of
merely taking longer: an attempt wait longer than the call's deadline.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterator

import pytest

from concord import aio
from concord.client import Client
from tests.client.conftest import _start
from tests.client.fakes import FakeNode
from tests.client.test_aio import AnyClient, Scenario, run_both
from tests.net.netutil import closed_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(60)]

#: No attempt timeout can end an attempt before the call's deadline.
NEVER_TIMES_OUT = {"timeout_s": 10.0, "attempt_timeout_s": 30.0}


def run_one(kind: str, endpoints: list[str], scenario: Scenario, **options: object) -> object:
    """The scenario's result with one client of `kind` ("sync" or "aio")."""
    async def main() -> object:
        if kind == "sync":
            with Client(endpoints, shm=False, **options) as sync:  # type: ignore[arg-type]
                return await scenario(AnyClient(sync, None))
        async with aio.Client(endpoints, **options) as client:  # type: ignore[arg-type]
            return await scenario(AnyClient(None, client))

    return asyncio.run(main())


@pytest.fixture
def doomed() -> Iterator[FakeNode]:
    """A fake node of its own, for a test to SIGKILL (its front door's ipc file removed after)."""
    node = _start("doomed")
    yield node
    node.stop()
    Path(node.backend_endpoint.removeprefix("ipc://")).unlink(missing_ok=True)


def test_write_without_session_sent_to_next_endpoint_when_first_port_closed(a: FakeNode) -> None:
    """A closed port refuses the connection: the write was certainly not sent, so even
    without a session it goes to the next endpoint at once, and is applied once."""
    dead = f"tcp://127.0.0.1:{closed_port()}"
    before = len(a.requests())

    async def scenario(c: AnyClient) -> object:
        await c.put("dn:closed", 1)
        return c.inner.transport.refused

    # NB: direct=False: no `status` probe (concord.client.direct), refused as well.
    assert [1, 1] == run_both([dead, a.endpoint], scenario, sessions=False, direct=False,
                              **NEVER_TIMES_OUT)
    puts = [r for r in a.requests()[before:] if r["op"] == "put"]
    assert 2 == len(puts)  # one per client: each write reached the live node once


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_leader_left_at_once_when_its_process_is_killed(a: FakeNode, doomed: FakeNode, kind: str) -> None:
    """SIGKILL of the node a client writes to: its connection drops, so the next write
    goes to the next endpoint at once (ended as silence if it was in flight, refused if
    sent after the drop), with no socket reopen, and is applied there."""
    async def scenario(c: AnyClient) -> object:
        await c.put("dn:before", 1)
        assert doomed.endpoint == c.inner.leader
        doomed.door.kill()
        await c.put("dn:after", kind)
        t = c.inner.transport
        return c.inner.leader, t.dropped, t.reopens, await c.get("dn:after")

    assert (a.endpoint, 1, 0, kind) == run_one(kind, [doomed.endpoint, a.endpoint], scenario,
                                              **NEVER_TIMES_OUT)


def test_live_node_asked_again_with_longer_wait_when_slow(a: FakeNode, node_b: FakeNode) -> None:
    """A live node slower than the first attempt's wait answers `timeout` itself (the
    client asks it to, before giving up): the write is resent to the same node with a
    doubled wait, never to another node and with no socket reopen (default settings)."""
    before_a, before_b = len(a.requests()), len(node_b.requests())

    async def scenario(c: AnyClient) -> object:
        await c.get("dn:warm", default=None)  # a is the leader now
        a.mode(ignore=1)
        await c.put("dn:slow", 1)
        return c.inner.transport.reopens

    assert [0, 0] == run_both([a.endpoint, node_b.endpoint], scenario, timeout_s=10.0)
    puts = [r for r in a.requests()[before_a:] if r["op"] == "put"]
    assert [100, 350] * 2 == [r["timeout_ms"] for r in puts]  # waits 0.25 s, then 0.5 s
    assert puts[0]["seq"] == puts[1]["seq"] and puts[2]["seq"] == puts[3]["seq"]
    assert [] == node_b.requests()[before_b:]
