"""
Sequential unary calls to etcd from one process, one connection: CPU per call on each side.

    python -m bench.etcd_sequential [--calls 3000] [--rounds 2] [--value-bytes 100] [--clients h2,grpc,aio]

Starts one 3-member etcd cluster with the bench's flags (bench/systems.py), then for each
round and each client (`h2`: bench/etcd_h2.py; `grpc`: grpcio's blocking stub; `aio`:
grpc.aio), `--calls` serializable Ranges and a third as many Puts to the leader, one at a
time after 200 unmeasured calls. Prints calls/s, the client's CPU per call and the
members' CPU per call (all three; the followers replicate the Puts). Nothing else shares
the connection, so the per-call cost of each client, and what it makes etcd do, show
without the load generator's multiplexing (docs/benchmarks.md "etcd's driver").
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.etcd_grpc import CHANNEL_OPTIONS, PUT, RANGE, encode_put, encode_range, target
from bench.etcd_h2 import H2Conn
from bench.procs import Procs
from bench.scenarios import server_cpu_s
from bench.systems import Etcd

CLIENTS = ("h2", "grpc", "aio")


def _h2_caller(endpoint: str, path: str) -> Callable[[bytes], None]:
    conn = H2Conn.connect(endpoint, path)

    def call(body: bytes) -> None:
        conn.send(body)
        while not conn.feed(conn.sock.recv(65536)):
            pass
        conn.reply()
    return call


def _grpc_caller(endpoint: str, path: str) -> Callable[[bytes], None]:
    import grpc

    channel = grpc.insecure_channel(target(endpoint), options=CHANNEL_OPTIONS)
    grpc.channel_ready_future(channel).result(timeout=30)
    stub = channel.unary_unary(path)

    def call(body: bytes) -> None:
        stub(body, timeout=10)
    return call


def _aio_caller(endpoint: str, path: str) -> Callable[[bytes], None]:
    import grpc

    async def open_channel() -> grpc.aio.Channel:  # made on the loop that will await its calls
        channel = grpc.aio.insecure_channel(target(endpoint), options=CHANNEL_OPTIONS)
        await asyncio.wait_for(channel.channel_ready(), 30)
        return channel

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    stub = loop.run_until_complete(open_channel()).unary_unary(path)

    def call(body: bytes) -> None:
        loop.run_until_complete(stub(body, timeout=10))
    return call


CALLERS: dict[str, Callable[[str, str], Callable[[bytes], None]]] = {
    "h2": _h2_caller, "grpc": _grpc_caller, "aio": _aio_caller,
}


def measure(system: Etcd, client: str, path: str, body: bytes, calls: int) -> tuple[float, float, float]:
    """(calls/s, client CPU µs per call, members' CPU µs per call)."""
    call = CALLERS[client](system.endpoints_leader_first()[0], path)
    for _ in range(200):
        call(body)
    s0, c0, t0 = server_cpu_s(system), time.process_time(), time.perf_counter()
    for _ in range(calls):
        call(body)
    elapsed = time.perf_counter() - t0
    return (calls / elapsed, (time.process_time() - c0) / calls * 1e6,
            (server_cpu_s(system) - s0) / calls * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.etcd_sequential")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--value-bytes", type=int, default=100,
                        help="the Puts' value size (above 16 KiB the driver splits and waits on etcd's windows)")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    args = parser.parse_args()
    ops = (("range", RANGE, encode_range(b"k1", True), args.calls),
           ("put", PUT, encode_put(b"k1", b"v" * args.value_bytes), max(1, args.calls // 3)))
    with tempfile.TemporaryDirectory(prefix="concord-etcd-sequential-") as tmp, Procs() as procs:
        system = Etcd(procs, Path(tmp))
        system.start()
        try:
            for r in range(args.rounds):
                for name, path, body, calls in ops:
                    for client in [c for c in args.clients.split(",") if c]:
                        rate, client_us, server_us = measure(system, client, path, body, calls)
                        print(f"round={r} op={name} client={client} calls/s={rate:.0f} "
                              f"client_cpu/call={client_us:.0f}us server_cpu/call={server_us:.0f}us", flush=True)
        finally:
            system.stop()


if __name__ == "__main__":
    main()
