"""
etcd over its native gRPC API, for the load generator: the messages, and the drivers.

The three messages the benchmark needs are encoded by hand: pulling in etcd's generated
stubs would add protobuf, a code generator and a vendored .proto tree to measure two
calls. The encodings follow etcd's api/etcdserverpb/rpc.proto:

  PutRequest   { bytes key = 1; bytes value = 2; }          -> /etcdserverpb.KV/Put
  RangeRequest { bytes key = 1; ... bool serializable = 7; } -> /etcdserverpb.KV/Range
  RangeResponse{ ResponseHeader header = 1; repeated KeyValue kvs = 2; bool more = 3;
                 int64 count = 4; }
  ResponseHeader { uint64 cluster_id = 1; uint64 member_id = 2; int64 revision = 3; ... }

Drivers (DRIVERS, chosen by LoadSpec.api), all with the Concord driver's load shape: K
logical clients in one process, each with its own connection and exactly one request in
flight (closed loop):

  h2   (the bench's) gRPC over HTTP/2 written by hand onto one socket per client, all of a
       process's sockets in one epoll loop (bench/etcd_h2.py): ~40-60 µs of client CPU per
       request on this machine
  aio  grpcio's grpc.aio, one channel per client (a local subchannel pool, so channels do
       not share a TCP connection) on one asyncio loop: ~160-370 µs per request, which on
       2 cores is taken from etcd's members (docs/benchmarks.md "etcd's driver")

The failover probe (put_once) uses grpcio's blocking stub: one call, cost irrelevant.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable, Iterator

from bench.drivers import LoadResult, LoadSpec, key_name, read_endpoints, value_for

PUT = "/etcdserverpb.KV/Put"
RANGE = "/etcdserverpb.KV/Range"
CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def encode_put(key: bytes, value: bytes) -> bytes:
    return _bytes_field(1, key) + _bytes_field(2, value)


def encode_range(key: bytes, serializable: bool) -> bytes:
    return _bytes_field(1, key) + (b"\x38\x01" if serializable else b"")


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes, what: str) -> Iterator[tuple[int, int, int, int]]:
    """
    (field number, wire type, value, offset) of each field of a protobuf message: for a
    varint the value; for a length-delimited field its length, its bytes at the offset.

    Raises:
        ValueError: another wire type (none of the messages read here has one).
    """
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        wire = tag & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            yield tag >> 3, wire, value, pos
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            yield tag >> 3, wire, length, pos
            pos += length
        else:
            raise ValueError(f"unexpected protobuf wire type {wire} in {what}")


def range_kv_count(reply: bytes) -> int:
    """How many KeyValues a RangeResponse carries (field 2)."""
    return sum(1 for number, wire, _, _ in _fields(reply, "RangeResponse") if number == 2 and wire == 2)


def header_revision(reply: bytes) -> int:
    """The revision in a Put/RangeResponse's ResponseHeader (field 1, its field 3); 0 if none."""
    for number, wire, length, start in _fields(reply, "a response"):
        if number == 1 and wire == 2:
            return _varint_field(reply[start:start + length], 3)
    return 0


def _varint_field(msg: bytes, number: int) -> int:
    """The value of varint field `number` of a message (0 if absent)."""
    for field, wire, value, _ in _fields(msg, "a ResponseHeader"):
        if field == number and wire == 0:
            return value
    return 0


def target(endpoint: str) -> str:
    """"http://127.0.0.1:2379" -> "127.0.0.1:2379"."""
    return endpoint.rsplit("//", 1)[-1]


_PROBE_CHANNELS: dict[str, object] = {}


def put_once(endpoint: str, key: str, value: str, timeout_s: float) -> bool:
    """One gRPC Put to one member (a cached blocking channel); True once acknowledged."""
    import grpc

    ch = _PROBE_CHANNELS.get(endpoint)
    if ch is None:
        ch = _PROBE_CHANNELS[endpoint] = grpc.insecure_channel(target(endpoint), options=CHANNEL_OPTIONS)
    call = ch.unary_unary(PUT)  # type: ignore[attr-defined]
    try:
        call(encode_put(key.encode(), value.encode()), timeout=timeout_s)
    except grpc.RpcError:
        return False
    return True


def run_etcd_grpc(spec: LoadSpec, start: Callable[[], None]) -> LoadResult:
    """spec.clients closed-loop gRPC clients, each on its own channel (connection)."""
    name = DEFAULT_DRIVER if spec.api in ("", "client") else spec.api  # "client": the latency probes
    if name not in DRIVERS:
        raise ValueError(f"unknown etcd driver {name!r}; known: {sorted(DRIVERS)}")
    return DRIVERS[name](spec, start)


def run_aio(spec: LoadSpec, start: Callable[[], None]) -> LoadResult:
    """grpc.aio: K channels on one asyncio loop."""
    return asyncio.run(_run(spec, start))


async def _run(spec: LoadSpec, start: Callable[[], None]) -> LoadResult:
    import grpc

    op, _, level = spec.op.partition(":")
    eps = read_endpoints(spec)
    channels = [grpc.aio.insecure_channel(target(eps[(c + spec.proc_index) % len(eps)]),
                                          options=CHANNEL_OPTIONS) for c in range(spec.clients)]
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 30)
    method = PUT if op == "put" else RANGE
    calls = [ch.unary_unary(method) for ch in channels]
    serializable = level == "serializable"
    lat = array("d")
    counts = {"ok": 0, "errors": 0, "issued": 0}
    first_error: list[str] = []
    start()
    c0 = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + spec.duration_s

    async def client(c: int) -> None:
        call = calls[c]
        i = spec.proc_index * 7919 + c * 104729
        perf = time.perf_counter
        while counts["issued"] < spec.max_ops and perf() < deadline:
            counts["issued"] += 1
            key = key_name(i % spec.keys).encode()
            body = encode_put(key, value_for(i % spec.keys, spec.value_bytes)) if op == "put" else encode_range(key, serializable)
            i += 1
            t = perf()
            try:
                reply = await call(body, timeout=10)
                if op != "put" and range_kv_count(reply) != 1:
                    raise KeyError(key)
            except Exception as exc:  # noqa: BLE001 - counted and reported, loop bounded
                counts["errors"] += 1
                if not first_error:
                    first_error.append(f"{type(exc).__name__}: {exc}")
            else:
                counts["ok"] += 1
                lat.append((perf() - t) * 1e6)

    await asyncio.gather(*(client(c) for c in range(spec.clients)))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    for ch in channels:
        await ch.close()
    return LoadResult(counts["ok"], counts["errors"], elapsed, lat,
                      first_error[0] if first_error else "", cpu)


def _h2(spec: LoadSpec, start: Callable[[], None]) -> LoadResult:
    from bench.etcd_h2 import run_h2  # imports this module

    return run_h2(spec, start)


#: The etcd load drivers by LoadSpec.api ("" and "client" = DEFAULT_DRIVER); one load shape.
DRIVERS: dict[str, Callable[[LoadSpec, Callable[[], None]], LoadResult]] = {
    "h2": _h2,
    "aio": run_aio,  # the bench's driver until 2026-12-07: grpcio costs 3-4x the CPU per call
}
DEFAULT_DRIVER = "h2"
