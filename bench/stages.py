"""
Where a request's CPU goes: server CPU per request, per process role, leader and followers.

    python -m bench.stages [--seconds 3] [--keys 10000] [--clients 1,128] [--json FILE]

Starts a 3-node Concord cluster (the settings of `python -m bench run`), loads the keys,
then measures, for each load (put, get strong, get leader, get eventual):

  - the CPU seconds every process of every node used during the load (psutil, user +
    system), grouped by role (supervisor children name themselves: raft, writer, door,
    readerN, ...; the supervisor is "supervisor") and by the node's role (leader or
    follower), divided by the acknowledged requests;
  - the same for an idle interval of the same length, so the fixed cost (ticks,
    heartbeats, polls) can be told apart from the per-request cost;
  - the wake-ups of each role's main thread per request: its voluntary context switches
    (/proc/<pid>/task/<pid>/status), about one per loop iteration that found nothing
    ready and had to wait.

The load is the benchmark's own driver (bench/drivers.py: one DEALER per client, one
request in flight), so the figures add up to what `python -m bench run` reports as
server_cpu_us_per_op. docs/benchmarks.md records the figures and what they mean.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import psutil

from bench.drivers import LoadSpec
from bench.load import run_load
from bench.procs import Procs
from bench.systems import Concord

LOADS = ("put", "get:strong", "get:leader", "get:eventual")


def role_processes(system: Concord, leader: int) -> Iterator[tuple[str, int]]:
    """(key "leader/<role>" or "follower/<role>", pid) of every process of every member."""
    for i, m in enumerate(system.members):
        if m.pid is None:
            continue
        side = "leader" if i == leader else "follower"
        for pid in system.procs.pids_of(m.pid):
            try:
                name = "supervisor" if pid == m.pid else psutil.Process(pid).name()
            except psutil.NoSuchProcess:
                continue
            role = name.rstrip("0123456789") if name.startswith("reader") else name
            yield f"{side}/{role}", pid


def role_cpu(system: Concord, leader: int) -> dict[str, float]:
    """CPU seconds so far, keyed "leader/<role>" or "follower/<role>"."""
    out: dict[str, float] = defaultdict(float)
    for key, pid in role_processes(system, leader):
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        out[key] += t.user + t.system
    return out


def role_wakeups(system: Concord, leader: int) -> dict[str, float]:
    """Voluntary context switches of each process's main thread so far, keyed like role_cpu."""
    out: dict[str, float] = defaultdict(float)
    for key, pid in role_processes(system, leader):
        try:
            status = Path(f"/proc/{pid}/task/{pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                out[key] += int(line.split()[1])
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def measure(system: Concord, leader: int, op: str, clients: int, seconds: float, keys: int,
            direct: bool = True) -> dict[str, object]:
    spec = LoadSpec("concord", system.endpoints_leader_first(), op, clients, seconds, 2_000_000, keys, 0,
                    direct=direct)
    c0, w0 = role_cpu(system, leader), role_wakeups(system, leader)
    r = run_load(spec, clients)
    used = delta(role_cpu(system, leader), c0)
    woke = delta(role_wakeups(system, leader), w0)
    per_op = {k: v / r.ok * 1e6 for k, v in sorted(used.items())} if r.ok else {}
    wakeups = {k: v / r.ok for k, v in sorted(woke.items())} if r.ok else {}
    return {"op": op, "clients": clients, "ok": r.ok, "errors": r.errors, "ops_per_s": r.ops_per_s,
            "p50_us": r.p50_us, "client_cpu_us_per_op": r.client_cpu_s / r.ok * 1e6 if r.ok else None,
            "server_cpu_us_per_op": sum(per_op.values()), "by_role_us_per_op": per_op,
            "wakeups_per_op": wakeups}


def idle(system: Concord, leader: int, seconds: float) -> dict[str, float]:
    """CPU per second of each role with no load (ticks, heartbeats, polling)."""
    c0 = role_cpu(system, leader)
    t0 = time.perf_counter()
    time.sleep(seconds)  # a measurement interval, not a wait for an event
    el = time.perf_counter() - t0
    return {k: v / el for k, v in sorted(delta(role_cpu(system, leader), c0).items())}


def print_table(row: dict[str, object]) -> None:
    print(f"\n{row['op']} x{row['clients']}: {row['ops_per_s']:.0f}/s, p50 {row['p50_us']:.0f} us, "
          f"server {row['server_cpu_us_per_op']:.0f} us/op, client {row['client_cpu_us_per_op']:.0f} us/op")
    by_role = row["by_role_us_per_op"]
    assert isinstance(by_role, dict)
    wakeups = row["wakeups_per_op"]
    assert isinstance(wakeups, dict)
    for k, v in by_role.items():
        print(f"    {k:22s} {v:8.1f} us/op  {wakeups.get(k, 0.0):6.2f} wake-ups/op")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--clients", default="1,128", help="comma-separated client counts")
    ap.add_argument("--loads", default=",".join(LOADS))
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--no-direct", action="store_true",
                    help="writes and strong reads through the client endpoint, not the direct one")
    args = ap.parse_args()
    out: dict[str, object] = {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="concord-bench-") as tmp, Procs() as procs:
        system = Concord(procs, Path(tmp))
        system.start()
        try:
            system.load_keys(args.keys)
            leader = system.leader_index()
            idle_cpu = idle(system, leader, args.seconds)
            out["idle_cpu_s_per_s"] = idle_cpu
            print("idle CPU (s/s):", {k: round(v, 4) for k, v in idle_cpu.items()})
            rows = []
            for op in args.loads.split(","):
                for clients in (int(c) for c in args.clients.split(",")):
                    row = measure(system, leader, op, clients, args.seconds, args.keys,
                                  not args.no_direct)
                    print_table(row)
                    rows.append(row)
            out["loads"] = rows
        finally:
            system.wipe()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
