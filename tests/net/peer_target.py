"""
A lone PeerTransport in its own process, for tests that may crash it (hostile input).

    python -m tests.net.peer_target NODE_ID PEER_ID=ENDPOINT ...

Prints `endpoint <ep>` once bound, then `recv <sender> <payload hex>` for every DATA
message, flushed. Exits when its stdin closes (the test's lifeline) or on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import zmq

from concord.ids import NodeId
from concord.net.peer import PeerTransport


def main(argv: list[str]) -> int:
    node_id = NodeId(argv[0])
    peers = {NodeId(k): v for k, v in (a.split("=", 1) for a in argv[1:])}
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    transport = PeerTransport(ctx, node_id, "tcp://127.0.0.1:0", peers)
    print("endpoint", transport.endpoint, flush=True)
    poller = zmq.Poller()
    transport.register(poller)
    poller.register(sys.stdin.fileno(), zmq.POLLIN)
    try:
        while not stopping:
            timeout_s = max(0.0, transport.next_deadline() - time.monotonic())
            events = dict(poller.poll(int(timeout_s * 1000) + 1))
            if sys.stdin.fileno() in events and not os.read(sys.stdin.fileno(), 1):
                break
            transport.service_timers(time.monotonic())
            while (message := transport.recv()) is not None:
                print("recv", message[0], message[1].hex(), flush=True)
    finally:
        transport.close()
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
