"""
The CPU per request of the front door and of a backend's intake (backend link), in one
thread over inproc sockets, so the figure is CPU time (time.thread_time), not wall time,
and a loaded machine changes it less than an end-to-end run.

    python bench/door_intake.py [--clients 64] [--rounds 300] [--repeats 3]
    PYTHONPATH=<checkout> python bench/door_intake.py ...   # another checkout's code

Each round: every client (one DEALER each) sends one put; one pass of the door takes them
and routes them to the raft backend; the backend takes what arrived (`BackendLink.recv`),
decodes each (`wire.decode_validated`) and answers all with `reply_many`; one pass of the
door sends the replies. Prints the door's CPU and the backend's intake CPU per request.
No Raft, no kv, no disk: only the transport between clients, door and raft worker.
"""

from __future__ import annotations

import argparse
import time
import uuid

import msgpack
import zmq

from concord.net.backend import BackendLink
from concord.net.frontdoor import FrontDoor, FrontDoorOptions
from concord.net.wire import Backend, decode_validated, ok_reply

def dealers(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, count: int) -> list[zmq.Socket[bytes]]:
    """`count` client DEALERs connected to `endpoint` (LINGER 0)."""
    socks = []
    for _ in range(count):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        socks.append(s)
    return socks


def measure(clients: int, rounds: int) -> tuple[float, float]:
    """(door CPU us per request, backend intake CPU us per request)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    tag = uuid.uuid4().hex
    door = FrontDoor(ctx, FrontDoorOptions(client_endpoint=f"inproc://c-{tag}", backend_endpoint=f"inproc://b-{tag}"))
    link = BackendLink(ctx, door.backend_endpoint, Backend.RAFT, "raft", heartbeat_interval_s=60)
    link.service_timers(time.monotonic())
    while "raft" not in door.backends:
        door.poll_once(10)
    socks = dealers(ctx, door.client_endpoint, clients)
    payloads = [msgpack.packb({"op": "put", "id": i, "key": f"key{i}", "value": "v" * 100}) for i in range(clients)]
    door_cpu = back_cpu = 0.0
    replies: list[tuple[int, bytes]]
    for r in range(rounds):
        for s, p in zip(socks, payloads):
            s.send_multipart([b"", p])
        t = time.thread_time(); door.poll_once(0); door_cpu += time.thread_time() - t
        t = time.thread_time()
        replies = []
        while (req := link.recv()) is not None:
            replies.append((req.token, ok_reply(decode_validated(req.payload).id, {"revision": r})))
        link.reply_many(replies)
        back_cpu += time.thread_time() - t
        assert len(replies) == clients, len(replies)
        t = time.thread_time(); door.poll_once(0); door_cpu += time.thread_time() - t
        for s in socks:
            s.recv_multipart()
    n = clients * rounds
    for s in socks:
        s.close()
    link.close()
    door.close()
    ctx.term()
    return door_cpu / n * 1e6, back_cpu / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(prog="python bench/door_intake.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for _ in range(args.repeats):
        door_us, backend_us = measure(args.clients, args.rounds)
        print(f"clients={args.clients} door {door_us:.2f} us/request, backend intake {backend_us:.2f} us/request")


if __name__ == "__main__":
    main()
