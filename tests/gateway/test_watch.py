"""
GET /api/v1/watch: Server-Sent Events resumable with Last-Event-ID. A client sees every
change under its prefix exactly once, in order, across a SIGKILL of the gateway process
(the supervisor restarts it on the same port).
"""

from __future__ import annotations

import signal

import psutil
import pytest

from concord.client.client import Client
from tests.gateway.httpkit import HTTP_SETTINGS, Http
from tests.gateway.ssekit import SseEvent, SseStream
from tests.helpers import wait_until
from tests.integration.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _gateway_pid(c: Cluster, node: str) -> int | None:
    """The pid of the node's http child: the process listening on the gateway's port."""
    port = int(c.nodes[node].endpoints["http"].rsplit(":", 1)[1])
    proc = c.nodes[node].proc
    assert proc is not None
    for child in psutil.Process(proc.pid).children():
        try:
            conns = child.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # NB: a child that exited between the listing and this look (the killed gateway)
        if any(conn.laddr.port == port and conn.status == psutil.CONN_LISTEN for conn in conns):
            return int(child.pid)
    return None


def _healthy(url: str) -> bool:
    h = Http(url, validate=False)
    try:
        return h.request("GET", "/health").status == 200
    finally:
        h.close()


def _write(wire: Client, start: int, count: int) -> None:
    """Changes under w/ (one of them a bulk put of 3 keys) and noise under x/."""
    for i in range(start, start + count):
        wire.put(f"w/{i}", {"i": i})
        wire.put(f"x/{i}", i)
    wire.put_many([(f"w/bulk{start}-{j}", j) for j in range(3)])
    wire.delete(f"w/{start}")


def _position(event: SseEvent) -> tuple[int, int]:
    return int(event.data["revision"]), int(event.data["i"])  # type: ignore[call-overload]


@pytest.mark.timeout(120)
def test_watch_sees_every_change_once_when_the_gateway_is_killed_and_resumed(cluster) -> None:  # type: ignore[no-untyped-def]
    """Every change under the prefix exactly once, in order, across a gateway SIGKILL + Last-Event-ID."""
    c: Cluster = cluster(n=1, http=HTTP_SETTINGS)
    node = c.ids[0]
    url = c.nodes[node].endpoints["http"]
    wire = Client(c.nodes[node].client, timeout_s=5.0)
    try:
        start = wire.status()["revision"]
        assert isinstance(start, int)
        stream = SseStream(url, f"/api/v1/watch?prefix=w/&since={start}")
        assert 200 == stream.status
        _write(wire, 0, 10)
        seen: list[SseEvent] = []
        for event in stream.events():
            seen.append(event)
            if len(seen) == 6:
                break
        old_pid = _gateway_pid(c, node)
        assert old_pid is not None
        psutil.Process(old_pid).send_signal(signal.SIGKILL)
        _write(wire, 10, 10)  # while the gateway is down
        stream.close()
        wait_until(lambda: _gateway_pid(c, node) not in (None, old_pid) and _healthy(url), 30.0,
                   "gateway not restarted")
        resumed = SseStream(url, "/api/v1/watch?prefix=w/", last_id=stream.last_id)
        assert 200 == resumed.status
        history = wire.events(start, prefix="w/", limit=1000).events
        for event in resumed.events():
            seen.append(event)
            if len(seen) >= len(history):
                break
        resumed.close()
        assert [(e.revision, e.batch_index, e.type, e.key, e.value) for e in history] == [
            (*_position(e), e.type, e.data["key"], e.data["value"]) for e in seen]
        assert len(history) == 2 * (10 + 3 + 1)
        # Resuming inside a bulk revision: Last-Event-ID R:0 starts at change 1 of R.
        bulk = next(e for e in history if e.batch_size == 3)
        partial = SseStream(url, "/api/v1/watch?prefix=w/", last_id=f"{bulk.revision}:0")
        first = next(partial.events())
        partial.close()
        assert (bulk.revision, 1) == _position(first)
        assert f"{bulk.revision}:1" == first.id
    finally:
        wire.close()


@pytest.mark.timeout(60)
def test_watch_refuses_a_bad_start_when_asked(cluster) -> None:  # type: ignore[no-untyped-def]
    """A malformed since or Last-Event-ID is invalid_request before any stream starts."""
    c: Cluster = cluster(n=1, http=HTTP_SETTINGS)
    h = Http(c.nodes[c.ids[0]].endpoints["http"])
    try:
        for path, headers in (("/watch?since=-1", {}), ("/watch?bogus=1", {}),
                              ("/watch", {"Last-Event-ID": "x"})):
            reply = h.request("GET", path, headers=headers)
            assert (400, "invalid_request") == (reply.status, reply.body["error"]), path
    finally:
        h.close()
