"""
The cost of one synchronous `concord.client.Client` call with one call in flight: its
latency (p50, p99) and the client process's CPU per call, for two checkouts of the client
code alternately, against one 3-node cluster.

    python -m bench.client_call --old /tmp/old-x [--rounds 2] [--calls 600] [--ops put,get:strong,get:eventual]

Starts a cluster with the settings of `python -m bench run` (bench.systems.Concord: the
server code is this checkout's, or CONCORD_ROOT's), loads the keys, then for each round
and op runs a probe process per code (old, then new: this checkout), each
`python bench/client_call.py --probe ...` with PYTHONPATH set to that code: one
`Client(shm=False, timeout_s=10)` given the endpoints leader first (the bench's 1-client
latency probe), a warm-up of 50 calls, then `--calls` sequential calls, each timed with
perf_counter; CPU is `time.process_time()` of the whole probe process (every thread)
over the timed calls. The probe part imports only the stdlib and `concord.client`, so it
runs against any checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def probe(endpoints: list[str], op: str, calls: int, keys: int) -> dict[str, object]:
    """Sequential calls of `op` through one Client: latencies and CPU (this process)."""
    from concord.client import Client

    kind, _, level = op.partition(":")
    value = b"v" * 100
    with Client(endpoints, shm=False, timeout_s=10) as client:
        def call(i: int) -> None:
            key = f"k{i % keys:07d}"
            if kind == "put":
                client.put(key, value)
            else:
                client.get(key, consistency=level)

        for i in range(50):
            call(i)
        lat = []
        cpu0 = time.process_time()
        for i in range(calls):
            t0 = time.perf_counter()
            call(i)
            lat.append(time.perf_counter() - t0)
        cpu = time.process_time() - cpu0
    lat.sort()
    return {"op": op, "calls": calls, "p50_ms": lat[len(lat) // 2] * 1e3,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
            "cpu_us_per_call": cpu / calls * 1e6}


def run_probe(code: Path, endpoints: list[str], op: str, calls: int, keys: int) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(code))
    out = subprocess.run(
        [sys.executable, str(HERE), "--probe", "--endpoints", ",".join(endpoints), "--ops", op,
         "--calls", str(calls), "--keys", str(keys)],
        env=env, check=True, capture_output=True, text=True, timeout=300)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.client_call", description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=Path, help="the other checkout (an export of the old code)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--calls", type=int, default=600)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--ops", default="put,get:strong,get:eventual")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--endpoints", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.endpoints.split(","), args.ops, args.calls, args.keys)))
        return
    import tempfile

    from bench.procs import Procs
    from bench.systems import Concord

    codes = ([("old", args.old.resolve())] if args.old else []) + [("new", HERE.parents[1])]
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, load average {os.getloadavg()[0]:.1f}")
    print(f"{'round':>5} {'code':>4} {'op':>13} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/call':>11}")
    with tempfile.TemporaryDirectory(prefix="concord-bench-") as tmp, Procs() as procs:
        system = Concord(procs, Path(tmp))
        system.start()
        try:
            system.load_keys(args.keys)
            endpoints = list(system.endpoints_leader_first())
            for r in range(1, args.rounds + 1):
                for op in args.ops.split(","):
                    for name, code in codes:
                        row = run_probe(code, endpoints, op, args.calls, args.keys)
                        print(f"{r:>5} {name:>4} {op:>13} {row['p50_ms']:7.2f} {row['p99_ms']:7.2f} "
                              f"{row['cpu_us_per_call']:11.0f}", flush=True)
        finally:
            system.wipe()
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
