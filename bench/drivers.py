"""
Client-side load loops, one per system, run inside load-generator processes.

The shape is the same for every system: a load process runs K logical clients, each with
exactly one request in flight (closed loop), until a deadline or a request budget. How the
K clients are multiplexed follows each client library:

  concord   K zmq DEALER sockets (one per client) in one thread, one zmq.Poller; the
            requests are wire protocol v1 maps (msgpack), exactly what concord.client
            sends, without its per-call lock (which serialises callers).
  etcd      K HTTP/2 connections (one socket each) on one epoll loop, speaking etcd's
            native gRPC API with hand-encoded HPACK and protobuf (bench/etcd_h2.py; the
            grpc.aio driver it replaced is `api="aio"`, bench/etcd_grpc.py).
  etcd-gw   a labelled extra: K threads, each its own etcd3gw.Etcd3Client (its own
            requests.Session) to etcd's gRPC-JSON gateway (/v3/), HTTP/JSON: about 8x
            slower than gRPC for the same cluster, so never the comparison baseline.
  redis     K threads, each its own redis-py connection.

PySyncObj has no network client (the application process is a Raft member), so its
loops run inside the member processes (bench/pysyncobj_node.py), with K callbacks in
flight. Ops: "put", "get:<level>" where level is eventual|leader|strong for Concord and
serializable|linearizable for etcd.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

VALUE_BYTES = 100  # the load shape: 100-byte values, 10,000 keys


@dataclass(frozen=True)
class LoadSpec:
    """What one load process does."""

    system: str
    endpoints: tuple[str, ...]  # write/leader endpoint first
    op: str
    clients: int
    duration_s: float
    max_ops: int  # per load process; bounds every loop
    keys: int  # keys are k0000000..k{keys-1}; reads hit existing keys
    proc_index: int
    api: str = ""  # concord: "client" = concord.client.Client per thread (latency probes)
    value_bytes: int = VALUE_BYTES  # size of every value a put writes
    server_key: str = ""  # concord: CURVE on the client sockets with this server key (bench/curve_bench.py)
    direct: bool = True  # concord: puts to the nodes' direct endpoints, as concord.client does


@dataclass
class LoadResult:
    """Counts and per-request latencies (microseconds) of one load process."""

    ok: int
    errors: int
    elapsed_s: float
    latencies_us: array  # type: ignore[type-arg]
    first_error: str = ""
    client_cpu_s: float = 0.0  # CPU time of the load process while measuring


def key_name(i: int) -> str:
    return f"k{i:07d}"


def value_for(i: int, size: int = VALUE_BYTES) -> bytes:
    """`size` bytes that differ per key (the key number, repeated)."""
    stamp = b"%08d" % i
    return (stamp * (size // 8 + 1))[:size]


def read_endpoints(spec: LoadSpec) -> Sequence[str]:
    """Writes and leader reads go to the first (leader) endpoint; other reads to all."""
    level = spec.op.partition(":")[2]
    if spec.op == "put" or level in ("leader",):
        return spec.endpoints[:1]
    return spec.endpoints


# -- concord ---------------------------------------------------------------------------

def run_concord_client(spec: LoadSpec, start: Callable[[], None]) -> LoadResult:
    """K threads, each its own concord.client.Client (shm off: reads go over the wire)."""
    from concord.client import Client

    op, _, level = spec.op.partition(":")

    def make_call(c: int) -> Callable[[int], object]:
        eps = list(read_endpoints(spec))
        eps = eps[(c + spec.proc_index) % len(eps):] + eps[:(c + spec.proc_index) % len(eps)]
        cl = Client(eps, shm=False, timeout_s=10, direct=spec.direct)
        if op == "put":
            return lambda i: cl.put(key_name(i), value_for(i, spec.value_bytes))
        return lambda i: cl.get(key_name(i), consistency=level)

    return _run_threads(spec, start, make_call)


def direct_endpoints(spec: LoadSpec, eps: Sequence[str], curve: object) -> Sequence[str]:
    """
    What a smart client (concord.client.direct) sends `spec.op` to: for a put (`eligible`),
    each node's direct endpoint (its `status` field `direct`) where it has one.
    """
    from concord.client.direct import eligible
    from concord.client.raw import request
    from concord.net.curve import CurveClient

    op, _, level = spec.op.partition(":")
    if not spec.direct or not eligible(op, {"consistency": level}):
        return eps
    assert curve is None or isinstance(curve, CurveClient)
    found = []
    for endpoint in eps:
        direct = request(endpoint, {"op": "status"}, timeout_ms=10_000, curve=curve).get("direct")
        found.append(direct if isinstance(direct, str) and direct else endpoint)
    return found


def run_concord(spec: LoadSpec, start: Callable[[], None]) -> LoadResult:
    if spec.api == "client":
        return run_concord_client(spec, start)
    import msgpack
    import zmq

    from concord.net.curve import CurveClient

    ctx = zmq.Context()
    curve = CurveClient.of(spec.server_key or None)
    eps = direct_endpoints(spec, read_endpoints(spec), curve)
    socks = []
    for c in range(spec.clients):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.apply(s)
        s.connect(eps[(c + spec.proc_index) % len(eps)])
        socks.append(s)
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    op, _, level = spec.op.partition(":")
    ids = itertools.count(1)
    keyseq = itertools.count(spec.proc_index * 7919)
    packb = msgpack.packb
    unpackb = msgpack.unpackb

    def request() -> bytes:
        i = next(keyseq) % spec.keys
        if op == "put":
            body: dict[str, object] = {"op": "put", "id": next(ids), "key": key_name(i),
                                       "value": value_for(i, spec.value_bytes)}
        else:
            body = {"op": "get", "id": next(ids), "key": key_name(i), "consistency": level}
        data: bytes = packb(body, use_bin_type=True)
        return data

    lat = array("d")
    ok = errors = 0
    first_error = ""
    sent_at: dict[object, float] = {}
    start()
    c0 = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + spec.duration_s
    issued = 0
    for s in socks:
        sent_at[s] = time.perf_counter()
        s.send_multipart([b"", request()])
        issued += 1
    inflight = len(socks)
    while inflight:
        events = poller.poll(1000)
        if not events:
            if time.perf_counter() > deadline + 10:
                errors += inflight
                first_error = first_error or "no reply within 10 s"
                break
            continue
        for s, _ in events:
            frames = s.recv_multipart()
            now = time.perf_counter()
            reply = unpackb(frames[-1], raw=False)
            if reply.get("ok"):
                ok += 1
                lat.append((now - sent_at[s]) * 1e6)
            else:
                errors += 1
                first_error = first_error or f"{reply.get('error')}: {reply.get('message')}"
            if now < deadline and issued < spec.max_ops:
                sent_at[s] = time.perf_counter()
                s.send_multipart([b"", request()])
                issued += 1
            else:
                inflight -= 1
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    for s in socks:
        s.close(linger=0)
    ctx.term()
    return LoadResult(ok, errors, elapsed, lat, first_error, cpu)


# -- threaded clients (etcd, redis) ---------------------------------------------------------

def _run_threads(spec: LoadSpec, start: Callable[[], None],
                 make_call: Callable[[int], Callable[[int], object]]) -> LoadResult:
    """K threads, each with its own client made by make_call(client_index)."""
    calls = [make_call(c) for c in range(spec.clients)]
    lock = threading.Lock()
    budget = [spec.max_ops]
    lat = array("d")
    counts = {"ok": 0, "errors": 0}
    first_error: list[str] = []
    t0_box: list[float] = []

    def worker(c: int) -> None:
        call = calls[c]
        local = array("d")
        ok = errors = 0
        i = spec.proc_index * 7919 + c * 104729
        deadline = t0_box[0] + spec.duration_s
        perf = time.perf_counter
        while True:
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            t = perf()
            try:
                call(i % spec.keys)
            except Exception as exc:  # noqa: BLE001 - counted and reported, loop bounded
                errors += 1
                if not first_error:
                    first_error.append(f"{type(exc).__name__}: {exc}")
            else:
                now = perf()
                ok += 1
                local.append((now - t) * 1e6)
            i += 1
            if perf() >= deadline:
                break
        with lock:
            counts["ok"] += ok
            counts["errors"] += errors
            lat.extend(local)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in range(spec.clients)]
    start()
    c0 = time.process_time()
    t0_box.append(time.perf_counter())
    for t in threads:
        t.start()
    for t in threads:
        t.join(spec.duration_s + 60)
    elapsed = time.perf_counter() - t0_box[0]
    return LoadResult(counts["ok"], counts["errors"], elapsed, lat, first_error[0] if first_error else "",
                      time.process_time() - c0)


def etcd_client(endpoint: str) -> object:
    """An etcd3gw client for "http://127.0.0.1:port" using the /v3/ gateway path."""
    from etcd3gw.client import Etcd3Client

    host, port = endpoint.rsplit("//", 1)[1].split(":")
    return Etcd3Client(host=host, port=int(port), api_path="/v3/", timeout=10)


def run_etcd_gateway(spec: LoadSpec, start: Callable[[], None]) -> LoadResult:
    eps = read_endpoints(spec)
    op, _, level = spec.op.partition(":")

    def make_call(c: int) -> Callable[[int], object]:
        cl = etcd_client(eps[(c + spec.proc_index) % len(eps)])
        if op == "put":
            return lambda i: cl.put(key_name(i), value_for(i).decode())  # type: ignore[attr-defined]
        serial = level == "serializable"

        def get(i: int) -> object:
            got = cl.get(key_name(i), serializable=serial)  # type: ignore[attr-defined]
            if not got:
                raise KeyError(key_name(i))
            return got
        return get

    return _run_threads(spec, start, make_call)


def run_redis(spec: LoadSpec, start: Callable[[], None]) -> LoadResult:
    import redis

    host, port = spec.endpoints[0].rsplit("//", 1)[1].split(":")
    op = spec.op.partition(":")[0]

    def make_call(c: int) -> Callable[[int], object]:
        r = redis.Redis(host=host, port=int(port))
        if op == "put":
            return lambda i: r.set(key_name(i), value_for(i))

        def get(i: int) -> object:
            got = r.get(key_name(i))
            if got is None:
                raise KeyError(key_name(i))
            return got
        return get

    return _run_threads(spec, start, make_call)


def run_etcd(spec: LoadSpec, start: Callable[[], None]) -> LoadResult:
    from bench.etcd_grpc import run_etcd_grpc  # imports this module: loaded on first use

    return run_etcd_grpc(spec, start)


def run_http(spec: LoadSpec, start: Callable[[], None]) -> LoadResult:
    """
    K threads, each its own keep-alive http.client connection to `endpoints[0]` (an HTTP
    base URL); the SAME loop for both HTTP APIs, `spec.api` picks the request shape:
    "concord" (PUT/GET /api/v1/kv/{key}, JSON) or "etcd" (POST /v3/kv/put and
    /v3/kv/range, base64 keys and values in JSON: etcd's gRPC-JSON gateway).
    """
    import http.client
    import json
    from urllib.parse import urlsplit

    url = urlsplit(spec.endpoints[0])
    op = spec.op.partition(":")[0]

    def make_call(c: int) -> Callable[[int], object]:
        conn = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=30)
        headers = {"Content-Type": "application/json"}

        def send(method: str, path: str, body: object) -> bytes:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            got = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {got[:200]!r}")
            return got

        if spec.api == "concord":
            if op == "put":
                return lambda i: send("PUT", f"/api/v1/kv/{key_name(i)}", {"value": value_for(i).decode()})
            return lambda i: send("GET", f"/api/v1/kv/{key_name(i)}", None)
        if op == "put":
            return lambda i: send("POST", "/v3/kv/put", {"key": b64(key_name(i)), "value": b64(value_for(i))})

        def etcd_get(i: int) -> object:
            got = send("POST", "/v3/kv/range", {"key": b64(key_name(i))})
            if b'"kvs"' not in got:
                raise KeyError(key_name(i))
            return got
        return etcd_get

    return _run_threads(spec, start, make_call)


RUNNERS: dict[str, Callable[[LoadSpec, Callable[[], None]], LoadResult]] = {
    "concord": run_concord,
    "etcd": run_etcd,
    "etcd-gw": run_etcd_gateway,
    "redis": run_redis,
    "http": run_http,
}


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()
