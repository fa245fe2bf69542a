"""Helpers shared by the net tests: a fake clock and event-driven receive loops."""

from __future__ import annotations

import math
import selectors
import socket
import subprocess
import time
from typing import Iterable

import zmq

from concord.ids import NodeId
from concord.net.peer import PeerTransport
from tests.helpers import wait_until


class FakeClock:
    """A clock the test moves by hand (monotonic seconds)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def recv_one(transport: PeerTransport, timeout_s: float = 5.0) -> tuple[NodeId, bytes] | None:
    """Wait on the transport's socket (a real event) for one DATA message."""
    poller = zmq.Poller()
    transport.register(poller)
    deadline = time.monotonic() + timeout_s
    while True:
        message = transport.recv()
        if message is not None:
            return message
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        poller.poll(math.ceil(remaining * 1000))


def drain(transport: PeerTransport) -> list[tuple[NodeId, bytes]]:
    """Every DATA message already waiting, without blocking."""
    out = []
    while (message := transport.recv()) is not None:
        out.append(message)
    return out


def establish(transports: Iterable[PeerTransport], clock: FakeClock, timeout_s: float = 10.0) -> None:
    """Ping until every transport has heard from every one of its peers."""
    group = list(transports)

    def all_heard() -> bool:
        now = clock.advance(1.0)
        for t in group:
            t.service_timers(now)
        for t in group:
            assert [] == drain(t)
        return all(t.last_heard(p) is not None for t in group for p in t.peers)

    wait_until(all_heard, timeout_s, describe=lambda: str([(t.node_id, t.stats) for t in group]))

    def quiet() -> bool:
        # Every ping sent has arrived (in-process, nothing is lost once connected), so no
        # stale ping can reach a test's later assertions.
        for t in group:
            assert [] == drain(t)
        sent = sum(t.stats.pings_sent for t in group)
        return sent == sum(t.stats.pings_received + t.stats.dropped_fault for t in group)

    wait_until(quiet, timeout_s, describe=lambda: str([(t.node_id, t.stats) for t in group]))


def closed_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (the OS closes it synchronously)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port



def read_lines(proc: subprocess.Popen[bytes], timeout_s: float) -> list[str]:
    """
    Lines the child printed, waiting at most `timeout_s` for the first (a real event).

    The child's stdout must be unbuffered on our side (Popen(bufsize=0)), so that select
    sees every byte not yet read.
    """
    assert proc.stdout is not None
    out: list[str] = []
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        wait = timeout_s
        while sel.select(wait):
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line.decode().strip())
            wait = 0
    return out
