"""
etcd's load drivers side by side (bench/etcd_grpc.py DRIVERS): one 3-member etcd cluster
(the bench's flags, fsync on), 10,000 keys of 100 bytes, and for each operation and client
count every driver in turn, round after round (alternating), with the bench's load shape:
one connection per logical client, one request in flight each, closed loop, spread over
the bench's load processes (bench/load.py processes_for) unless --processes says otherwise.

    python -m bench.etcd_clients [--drivers aio,threads] [--ops put,get:serializable,get:linearizable]
                                 [--clients 1,64,128] [--rounds 2] [--seconds 3] [--processes N]

Prints one line per run: ops/s, p50, p99, server CPU per request (all three members),
client CPU per request (the load processes) and the members' context switches per request
(thread wake-ups), then the medians per driver.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import psutil

from bench.drivers import LoadSpec
from bench.etcd_grpc import DRIVERS
from bench.load import run_load
from bench.procs import Procs
from bench.scenarios import MAX_OPS, member_processes, server_cpu_s
from bench.systems import Etcd

KEYS = 10_000


def server_switches(system: Etcd) -> int:
    """Context switches so far (voluntary and involuntary) of every member process."""
    total = 0
    for _, proc in member_processes(system):
        try:
            sw = proc.num_ctx_switches()
        except psutil.NoSuchProcess:
            continue
        total += sw.voluntary + sw.involuntary
    return total


def _csv(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.etcd_clients")
    parser.add_argument("--drivers", default=",".join(DRIVERS))
    parser.add_argument("--ops", default="put,get:serializable,get:linearizable")
    parser.add_argument("--clients", default="1,64,128")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=0, help="load processes (default: the bench's)")
    args = parser.parse_args()
    drivers = _csv(args.drivers)
    unknown = [d for d in drivers if d not in DRIVERS]
    if unknown:
        parser.error(f"unknown driver(s) {unknown}; known: {sorted(DRIVERS)}")
    got: dict[tuple[str, int, str], list[tuple[float, float, float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="concord-etcd-clients-") as tmp, Procs() as procs:
        system = Etcd(procs, Path(tmp))
        system.start()
        try:
            system.load_keys(KEYS)
            for r in range(args.rounds):
                for op in _csv(args.ops):
                    for clients in [int(c) for c in _csv(args.clients)]:
                        for driver in drivers:
                            spec = LoadSpec("etcd", system.endpoints_leader_first(), op, clients,
                                            args.seconds, MAX_OPS, KEYS, 0, driver)
                            c0, sw0 = server_cpu_s(system), server_switches(system)
                            s = run_load(spec, clients, args.processes or None)
                            ok = max(1, s.ok)
                            server_us = (server_cpu_s(system) - c0) / ok * 1e6
                            switches = (server_switches(system) - sw0) / ok
                            client_us = s.client_cpu_s / ok * 1e6
                            print(f"round={r} op={op} clients={clients} driver={driver} procs={s.processes} "
                                  f"ok={s.ok} errors={s.errors} ops/s={s.ops_per_s:.0f} "
                                  f"p50={s.p50_us / 1000:.2f}ms p99={s.p99_us / 1000:.2f}ms "
                                  f"server_cpu/op={server_us:.0f}us client_cpu/op={client_us:.0f}us "
                                  f"server_switches/op={switches:.2f} first_error={s.first_error!r}", flush=True)
                            got.setdefault((op, clients, driver), []).append(
                                (s.ops_per_s, s.p50_us, s.p99_us, server_us, client_us))
        finally:
            system.stop()
    print("medians:")
    for (op, clients, driver), runs in got.items():
        med = [statistics.median(x[i] for x in runs) for i in range(5)]
        print(f"  op={op} clients={clients} driver={driver} runs={len(runs)} ops/s={med[0]:.0f} "
              f"p50={med[1] / 1000:.2f}ms p99={med[2] / 1000:.2f}ms server_cpu/op={med[3]:.0f}us "
              f"client_cpu/op={med[4]:.0f}us")


if __name__ == "__main__":
    main()
