"""
Hostile input on the peer port never takes the process down (issue 12, found #5).

The transport runs in its own process (tests/net/peer_target.py) because the defect this
guards against was a libzmq abort (SIGABRT), which would take the test runner with it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import zmq

from concord.ids import NodeId
from concord.net.peer import PeerTransport
from tests.helpers import wait_until
from tests.net.netutil import read_lines
from tests.net.zmtp import ZmtpClient

pytestmark = pytest.mark.slow

N1, N2 = NodeId("n1"), NodeId("n2")
Zmq = zmq.Context[zmq.Socket[bytes]]


@pytest.fixture
def real_n2(ctx: Zmq) -> Iterator[PeerTransport]:
    t = PeerTransport(ctx, N2, "tcp://127.0.0.1:0")
    yield t
    t.close()


@pytest.fixture
def target(real_n2: PeerTransport) -> Iterator[subprocess.Popen[bytes]]:
    """Node n1's PeerTransport, alone in a child process, with n2 as its peer."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.net.peer_target", N1, f"{N2}={real_n2.endpoint}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the lifeline: it exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _endpoint(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    assert "endpoint" == line[0], line
    return line[1]


def test_peer_process_survives_when_strangers_reuse_a_member_id_and_reset(
    target: subprocess.Popen[bytes], real_n2: PeerTransport
) -> None:
    """Connections announcing a member's routing id, sending, then resetting, abort nothing."""
    endpoint = _endpoint(target)
    real_n2.add_peer(N1, endpoint)
    port = int(endpoint.rsplit(":", 1)[1])
    lines: list[str] = []

    def delivered(tag: bytes) -> bool:
        real_n2.send(N1, tag)
        lines.extend(read_lines(target, 0.05))
        return f"recv n2 {tag.hex()}" in lines

    def alive_and_serving(tag: bytes) -> bool:
        assert target.poll() is None, f"peer process died: {target.stderr.read() if target.stderr else b''!r}"
        return delivered(tag)

    wait_until(lambda: alive_and_serving(b"before"), 10.0, describe=lambda: str(lines))
    # Pairs of connections claim the same member id; the one displaced (or refused) sends
    # into a pipe nobody reads, then resets. In libzmq 4.3.5 with ROUTER_HANDOVER and ZMTP
    # heartbeats on the ROUTER, its heartbeat timer then hit `!_io_error` and aborted.
    for round_no in range(20):
        first, second = ZmtpClient(port, b"n2"), ZmtpClient(port, b"n2")
        first.handshake()
        second.handshake()
        for conn in (first, second):
            for _ in range(3):
                conn.send([bytes((1, 1)), b"spoofed %d" % round_no])
            conn.reset()
    attacked_at = time.monotonic()
    # Outlive every ZMTP heartbeat interval the attack could have armed (500 ms), serving.
    wait_until(lambda: time.monotonic() - attacked_at > 1.5 and alive_and_serving(b"after"),
               20.0, describe=lambda: str(lines[-5:]))
