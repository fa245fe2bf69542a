"""
Cost of the front-door hop, measured in one run with pyzmq.

Round trip of one small request (sequential, one in flight) along three paths:

  direct     client DEALER -tcp-> echo backend ROUTER
  frontdoor  client DEALER -tcp-> FrontDoor (Python broker, own process) -ipc-> echo backend
  proxy      client DEALER -tcp-> zmq.proxy (C, ROUTER->DEALER, own process) -ipc-> echo ROUTER

Every backend does the same work: decode and validate the request with
concord.net.wire, and encode an ok reply. Each component runs in its own process
(spawn), with its own zmq context. Prints median, p99 and mean in microseconds and the
ratios against `direct`. The paths are measured interleaved, in 10 rounds.

    python bench/net_hop.py [--n 5000] [--warmup 500]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection

import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from concord.net.backend import BackendLink  # noqa: E402
from concord.client.raw import request  # noqa: E402
from concord.net.frontdoor import FrontDoorOptions, serve_in_process  # noqa: E402
from concord.net.wire import Backend, decode_request, ok_reply, pack  # noqa: E402

Context = zmq.Context[zmq.Socket[bytes]]


def _stop_requested(conn: Connection) -> bool:
    try:
        return conn.poll(0)
    except (EOFError, OSError):
        return True


def echo_router_main(tcp: str, ipc: str, conn: Connection) -> None:
    """Echo ROUTER for the direct and proxy paths: reply with the same routing prefix."""
    ctx: Context = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(tcp)
    sock.bind(ipc)
    conn.send("ready")
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(conn.fileno(), zmq.POLLIN)
    while not _stop_requested(conn):
        if not poller.poll(100):
            continue
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            request = decode_request(frames[-1])
            sock.send_multipart([*frames[:-1], ok_reply(request.id, {"v": 1})])
    sock.close(0)
    ctx.term()


def backend_main(endpoint: str, conn: Connection) -> None:
    """Echo backend behind the front door."""
    ctx: Context = zmq.Context()
    link = BackendLink(ctx, endpoint, Backend.RAFT, "bench-raft", heartbeat_interval_s=0.2)
    poller = zmq.Poller()
    link.register(poller)
    poller.register(conn.fileno(), zmq.POLLIN)
    conn.send("ready")
    while not _stop_requested(conn):
        poller.poll(math.ceil(max(0.0, link.next_deadline() - time.monotonic()) * 1000))
        link.service_timers(time.monotonic())
        while (req := link.recv()) is not None:
            request = decode_request(req.payload)
            link.reply(req.token, ok_reply(request.id, {"v": 1}))
    link.close()
    ctx.term()


def proxy_main(front: str, back: str, conn: Connection) -> None:
    """C-level zmq.proxy ROUTER -> DEALER; stopped by the parent killing this process."""
    ctx: Context = zmq.Context()
    frontend = ctx.socket(zmq.ROUTER)
    backend = ctx.socket(zmq.DEALER)
    for s in (frontend, backend):
        s.setsockopt(zmq.LINGER, 0)
    frontend.bind(front)
    backend.connect(back)
    conn.send("ready")
    zmq.proxy(frontend, backend)


def measure(ctx: Context, endpoint: str, n: int, warmup: int) -> list[float]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    samples: list[float] = []
    try:
        for i in range(warmup + n):
            payload = pack({"op": "put", "id": i, "key": "bench", "value": b"x" * 64})
            t0 = time.perf_counter()
            sock.send_multipart([b"", payload])
            if not sock.poll(5000):
                raise SystemExit(f"no reply from {endpoint} for request {i}")
            sock.recv_multipart()
            if i >= warmup:
                samples.append((time.perf_counter() - t0) * 1e6)
    finally:
        sock.close(0)
    return samples


def summary(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1], statistics.fmean(ordered)


def free_tcp_port(ctx: Context) -> int:
    probe = ctx.socket(zmq.ROUTER)
    probe.setsockopt(zmq.LINGER, 0)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(0)
    return port


def main() -> None:
    import multiprocessing

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args()
    mp = multiprocessing.get_context("spawn")
    ctx: Context = zmq.Context()
    tmp = tempfile.gettempdir()
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    echo_ipc = f"ipc://{tmp}/concord-bench-echo-{tag}.ipc"
    door_ipc = f"ipc://{tmp}/concord-bench-door-{tag}.ipc"
    echo_tcp = f"tcp://127.0.0.1:{free_tcp_port(ctx)}"
    proxy_tcp = f"tcp://127.0.0.1:{free_tcp_port(ctx)}"
    procs = []
    conns = []

    def start(target: object, *targs: object) -> Connection:
        parent, child = mp.Pipe()
        p = mp.Process(target=target, args=(*targs, child), daemon=True)  # type: ignore[arg-type]
        p.start()
        child.close()
        procs.append(p)
        conns.append(parent)
        return parent

    try:
        start(echo_router_main, echo_tcp, echo_ipc).recv()
        door_conn = start(serve_in_process, FrontDoorOptions("tcp://127.0.0.1:0", door_ipc))
        status, door_endpoint, _ = door_conn.recv()
        assert status == "ready"
        start(backend_main, door_ipc).recv()
        start(proxy_main, proxy_tcp, echo_ipc).recv()
        # Wait until the front door knows its backend (an ok reply, not no_leader).
        deadline = time.monotonic() + 10
        while not request(door_endpoint, {"op": "status"}, timeout_ms=1000, ctx=ctx)["ok"]:
            if time.monotonic() > deadline:
                raise SystemExit("front door backend never registered")
        print(f"net_hop: n={args.n} warmup={args.warmup} pid={os.getpid()} cpus={os.cpu_count()}")
        paths = [("direct", echo_tcp), ("frontdoor", door_endpoint), ("proxy", proxy_tcp)]
        samples: dict[str, list[float]] = {name: [] for name, _ in paths}
        for name, endpoint in paths:
            measure(ctx, endpoint, 0, args.warmup)
        # Interleave the paths in rounds so load drift on a shared box hits all alike.
        rounds = 10
        for _ in range(rounds):
            for name, endpoint in paths:
                samples[name] += measure(ctx, endpoint, max(1, args.n // rounds), 0)
        results = {name: summary(values) for name, values in samples.items()}
        base = results["direct"][0]
        for name, (median, p99, mean) in results.items():
            print(
                f"{name:10s} median={median:8.1f}us p99={p99:8.1f}us mean={mean:8.1f}us "
                f"ratio_median={median / base:5.2f}"
            )
        print(f"frontdoor hop cost (median) = {results['frontdoor'][0] - base:.1f}us")
    finally:
        for c in conns:
            try:
                c.send("stop")
            except (BrokenPipeError, OSError):
                pass
        for p in procs:
            p.join(2)
            if p.is_alive():
                p.kill()
                p.join(2)
        for c in conns:
            c.close()
        ctx.term()
        for path in (echo_ipc, door_ipc):
            try:
                os.unlink(path[len("ipc://"):])
            except FileNotFoundError:
                pass


if __name__ == "__main__":
    main()
