"""
The front door's CPU per read it answers itself (inline, from shared memory), in one
thread over inproc sockets, so the figure is CPU time (time.thread_time), not wall time,
and a loaded machine changes it less than an end-to-end run.

    python bench/door_inline.py [--clients 1,64] [--rounds 300] [--repeats 3] [--keys 2000]
    PYTHONPATH=<checkout> python bench/door_inline.py ...   # another checkout's code

Builds a shared-memory store of `--keys` keys (100-byte values), attaches the door's own
view of it (concord.node.shm_reads.DoorReads, as a node's door does), then each round:
every client (one DEALER each) sends one `get` at `eventual`; one pass of the door
receives, decodes and validates them, answers each from the view and sends the replies.
Prints the door's CPU per read. With 1 client, one pass handles one read: the figure then
includes the fixed cost of a pass of the door's loop. No backend, no Raft.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

import msgpack
import zmq

from bench.door_intake import dealers
from concord.config import parse_config
from concord.kv.record import Change, ChangeType, KeyRecord, Space
from concord.net.frontdoor import FrontDoor, FrontDoorOptions
from concord.node.shm_reads import DoorReads
from concord.shm.layout import SegmentNames
from concord.shm.publisher import Publisher
from concord.shm.segments import create_store, unlink_store


def build_store(names: SegmentNames, keys: int) -> None:
    """A store of `keys` keys "key<i>" with 100-byte string values, published at index 1."""
    create_store(names, ring_capacity=1 << max(6, (keys - 1).bit_length()), initial_bytes=keys * 256 + 4096)
    pub = Publisher.attach(names)
    try:
        changes = [Change(ChangeType.PUT, Space.USER, f"key{i}",
                          KeyRecord(f"key{i}", msgpack.packb("v" * 100), 0, 1, 1, 1, 0), 1, 0)
                   for i in range(keys)]
        pub.publish(changes, 1, 1, time.time_ns() // 1_000_000)
    finally:
        pub.close()


def measure(clients: int, rounds: int, keys: int, names: SegmentNames, data_dir: Path) -> float:
    """Door CPU us per inline read."""
    config = parse_config({"node": {"id": "n1", "data_dir": str(data_dir)}}, data_dir)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    tag = uuid.uuid4().hex
    inline = DoorReads(config, names)
    while not inline.ready:
        time.sleep(0.01)
    door = FrontDoor(ctx, FrontDoorOptions(client_endpoint=f"inproc://c-{tag}", backend_endpoint=f"inproc://b-{tag}"),
                     inline=inline)
    socks = dealers(ctx, door.client_endpoint, clients)
    payloads = [msgpack.packb({"op": "get", "id": i, "key": f"key{i % keys}", "consistency": "eventual"})
                for i in range(clients)]
    door_cpu = 0.0
    for _ in range(rounds):
        for s, p in zip(socks, payloads):
            s.send_multipart([b"", p])
        t = time.thread_time(); door.poll_once(100); door_cpu += time.thread_time() - t
        for s in socks:
            reply = msgpack.unpackb(s.recv_multipart()[-1])
            assert reply.get("ok") is True, reply
    for s in socks:
        s.close()
    door.close()
    ctx.term()
    return door_cpu / (clients * rounds) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(prog="python bench/door_inline.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,64", help="comma-separated client counts")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keys", type=int, default=2000)
    args = ap.parse_args()
    names = SegmentNames(f"bdi{os.getpid()}", "s0")
    build_store(names, args.keys)
    try:
        with tempfile.TemporaryDirectory(prefix="concord-bench-inline-") as tmp:
            for clients in (int(c) for c in args.clients.split(",")):
                for _ in range(args.repeats):
                    us = measure(clients, args.rounds, args.keys, names, Path(tmp))
                    print(f"clients={clients} door {us:.2f} us/read")
    finally:
        unlink_store(names)


if __name__ == "__main__":
    main()
