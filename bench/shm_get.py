"""
Same-host `Client.get` from shared memory: reads per second of one application process.

    python bench/shm_get.py [--keys 100000] [--nodes 1] [--seconds 2.0] [--rounds 2]
    CONCORD_ROOT=<checkout> python bench/shm_get.py ...   # measure another checkout's code

Starts a cluster (bench.systems.Concord, `--nodes` members), loads `--keys` keys (100-byte
values, bench.drivers names), then runs `measure` in a child process whose PYTHONPATH is
CONCORD_ROOT (so the client code measured is that checkout's): `Client(shm=True)` with
the key names built before the timed loops: one pass of `Client.get(eventual)` over every
key (the first read of each key by this client), then `Client.get` at `eventual` and
`leader`, then `LocalStore.read("get", ...)`, each for `--seconds` (whole passes over the
keys), `--rounds` times, a fresh client per round. Prints one JSON line per round.
`measure` is also what the shm_reads scenario of `python -m bench` runs.

`--profile` runs one cProfile of `Client.get` eventual instead (the top 15 by own time);
`--layers` times each layer under `Client.get` in one process, with no cluster (`layers`).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Every path measured: what `measure` returns, one entry per path, in order.
PATHS = ("client.get eventual, first read of each key", "client.get eventual", "client.get leader",
         "LocalStore.read eventual")


def key_names(keys: int) -> list[str]:
    """The bench key names k0000000..: the same as bench.drivers.key_name."""
    return [f"k{i:07d}" for i in range(keys)]


def _eventual(get: Callable[..., object], names: list[str]) -> None:
    for name in names:
        get(name, "eventual")


def _leader(get: Callable[..., object], names: list[str]) -> None:
    for name in names:
        get(name, "leader")


def _read(read: Callable[..., object], names: list[str]) -> None:
    for name in names:
        read("get", {"key": name, "consistency": "eventual"})


def _each(fn: Callable[[str], object], names: list[str]) -> None:
    for name in names:
        fn(name)


def _timed(one_pass: Callable[[Callable[..., object], list[str]], None], fn: Callable[..., object],
           names: list[str], seconds: float, store: Any) -> dict[str, object]:
    """`one_pass(fn, names)` until `seconds` have passed (at least once); reads/s and reads/CPU s."""
    before = store.served
    n = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        one_pass(fn, names)
        n += len(names)
        if time.perf_counter() >= deadline or n >= 50_000_000:
            break
    el = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"ops_per_s": n / el, "ops_per_cpu_s": n / cpu, "served_from_shm": store.served - before,
            "ops": n, "keys": len(names)}


def measure(endpoint: str, keys: int, seconds: float) -> dict[str, dict[str, object]]:
    """
    Reads per second of this process over `keys` keys, one entry per path of `PATHS`.

    The names are built before the timed loops, visited with a stride coprime to `keys`
    (neighbouring reads are far apart in the key space, every key once per pass), so the
    loops measure the read, not string formatting.
    """
    from concord.client import Client

    names = key_names(keys)
    stride = next(s for s in range(7919, 7919 + keys + 2) if math.gcd(s, keys) == 1)
    names = [names[(i * stride) % keys] for i in range(keys)]
    got: dict[str, dict[str, object]] = {}
    with Client([endpoint], shm=True) as c:
        c.get(names[0], consistency="eventual")  # probes status and attaches
        store = c.local_store
        if store is None:
            raise RuntimeError("no same-host store attached")
        # one pass (seconds 0): every key read once by a fresh client, nothing cached yet
        got["client.get eventual, first read of each key"] = _timed(_eventual, c.get, names, 0.0, store)
        got["client.get eventual"] = _timed(_eventual, c.get, names, seconds, store)
        got["client.get leader"] = _timed(_leader, c.get, names, seconds, store)
        got["LocalStore.read eventual"] = _timed(_read, store.read, names, seconds, store)
    return got


def profile(endpoint: str, keys: int) -> None:
    """cProfile of 200,000 `Client.get(eventual)` calls (top 15 by own time)."""
    import cProfile
    import pstats

    from concord.client import Client

    names = key_names(keys)
    with Client([endpoint], shm=True) as c:
        c.get(names[0], consistency="eventual")
        get = c.get
        prof = cProfile.Profile()
        prof.enable()
        for i in range(200_000):
            get(names[i % keys], "eventual")
        prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def layers(keys: int) -> None:
    """
    CPU ns per call of each layer under `Client.get`, in this process, no cluster: a store
    published here (`keys` keys of 100-byte values, LEADER with a lease), attached to a
    Client with a dead endpoint (every read must be local). Best of 3 passes over the keys.
    """
    import msgpack

    from concord.client import Client
    from concord.client.local import LocalStore
    from concord.kv.record import Change, ChangeType, KeyRecord, Space
    from concord.raft.state import Role
    from concord.shm.layout import SegmentNames
    from concord.shm.publisher import Publisher
    from concord.shm.segments import create_store, unlink_store

    names = key_names(keys)
    seg = SegmentNames(f"shmget{os.getpid()}", "layers")
    create_store(seg, ring_capacity=1 << 16, initial_bytes=1 << 24)
    try:
        pub = Publisher.attach(seg)
        now_ms = time.time_ns() // 1_000_000
        for lo in range(0, keys, 1000):
            pub.publish([Change(ChangeType.PUT, Space.USER, k,
                                KeyRecord(k, msgpack.packb(b"x" * 100), 0, 1, 1, 1, 0), 1, 0)
                         for k in names[lo:lo + 1000]], lo + 1, 1, now_ms)
        pub.set_status(1, seg.node, Role.LEADER)
        pub.set_lease(time.monotonic_ns() + 3600 * 10**9)

        def best(fn: Callable[[], None]) -> float:
            out = []
            for _ in range(3):
                c0 = time.process_time()
                fn()
                out.append((time.process_time() - c0) / keys * 1e9)
            return min(out)

        store = LocalStore.open(seg)
        assert store is not None
        with Client("tcp://127.0.0.1:9", shm=True) as c:
            view = store._view
            cold = []
            for _ in range(3):  # every key read once by a store that has cached nothing
                fresh = LocalStore.open(seg)
                assert fresh is not None
                c._store = fresh
                c0 = time.process_time()
                _eventual(c.get, names)
                cold.append((time.process_time() - c0) / keys * 1e9)
                fresh.close()
            c._store = store
            rows = {"Client.get eventual, first read of each key": min(cold)}
            rows["Client.get eventual"] = best(lambda: _eventual(c.get, names))
            rows["Client.get leader"] = best(lambda: _leader(c.get, names))
            rows["LocalStore.get eventual"] = best(lambda: _eventual(store.get, names))
            rows["LocalStore.read eventual"] = best(lambda: _read(store.read, names))
            rows["ShmView.get_encoded"] = best(lambda: _each(view.get_encoded, names))
            rows["ShmView.holds_leader_lease"] = best(lambda: _each(lambda k: view.holds_leader_lease(), names))
        store.close()
        pub.close()
    finally:
        unlink_store(seg)
    for label, ns in rows.items():
        print(f"{label:45s} {ns:7.0f} ns CPU per call  ({1e9 / ns:12,.0f} per CPU s)")


def _child(argv: list[str]) -> None:
    endpoint, keys, seconds, rounds, mode = argv[0], int(argv[1]), float(argv[2]), int(argv[3]), argv[4]
    if mode == "profile":
        profile(endpoint, keys)
        return
    if mode == "layers":
        layers(keys)
        return
    for _ in range(rounds):
        print(json.dumps(measure(endpoint, keys, seconds)), flush=True)


def main() -> None:
    import argparse
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.procs import Procs
    from bench.systems import ROOT, Concord

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--layers", action="store_true")
    args = ap.parse_args()
    if args.layers:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        subprocess.run([sys.executable, __file__, "--child", "", str(args.keys), "0", "1", "layers"],
                       env=env, check=True)
        return
    with tempfile.TemporaryDirectory(prefix="concord-bench-") as tmp, Procs() as procs:
        s = Concord(procs, Path(tmp))
        s.nodes = args.nodes
        s.start()
        t0 = time.perf_counter()
        s.load_keys(args.keys)
        print(f"root={ROOT} loaded {args.keys} keys into {args.nodes} node(s) in "
              f"{time.perf_counter() - t0:.1f} s; load average {os.getloadavg()[0]:.2f}", flush=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        subprocess.run([sys.executable, __file__, "--child", s.endpoints_leader_first()[0], str(args.keys),
                        str(args.seconds), str(args.rounds), "profile" if args.profile else "measure"],
                       env=env, check=True)
        s.wipe()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
    else:
        multiprocessing.set_start_method("spawn")
        main()
