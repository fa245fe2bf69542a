"""
The cost of forwarding (concord/node/forward.py, docs/protocol.md "Forwarding to the
leader"): puts sent to the leader's endpoint against puts sent to a follower's, which
relays them to the leader over the peer link, on one 3-node cluster (fsync on, 100-byte
values, the bench/ load generator: closed-loop zmq.asyncio DEALERs, one request in
flight each, no hint following), at 1 and 64 clients, leader and follower interleaved.

    python -m bench.forward_bench [--duration 10] [--rounds 1]

Prints one line per measurement (writes/s, p50, p99, server CPU per put over every
process of the three nodes), then where that CPU went (per node role: the leader, the
follower the puts were sent to, the other follower; per process: door, raft, writer;
read workers are idle under puts), and, per client count, the follower / leader ratios
of the medians. A run with errors (leadership moved: the load generator does not follow it)
is shown and left out of the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import psutil

from bench.drivers import LoadSpec
from bench.load import run_load
from bench.procs import Procs
from bench.scenarios import member_processes, server_cpu_s
from bench.systems import Concord

CLIENTS = (1, 64)
VIAS = ("leader", "follower")


def endpoints(system: Concord, via: str) -> tuple[str, ...]:
    """Every endpoint, the one the puts go to first (the load generator uses only it)."""
    leader_first = system.endpoints_leader_first()
    return leader_first if via == "leader" else leader_first[1:] + leader_first[:1]


def roles(system: Concord, via: str) -> dict[str, str]:
    """Member id -> "leader", "entry" (where the puts go, when not the leader) or "other"."""
    first = endpoints(system, via)[0]
    leader = system.endpoints_leader_first()[0]
    return {m.id: "leader" if m.endpoint == leader else "entry" if m.endpoint == first
            else "other" for m in system.members}


def cpu_by_stage(system: Concord, role_of: dict[str, str]) -> dict[str, float]:
    """CPU seconds so far per (node role, process name), e.g. "leader raft"."""
    out: dict[str, float] = {}
    for member, proc in member_processes(system):
        try:
            t = proc.cpu_times()
            name = proc.name()
        except psutil.NoSuchProcess:
            continue
        key = f"{role_of[member]} {name if name in ('door', 'raft', 'writer') else 'other'}"
        out[key] = out.get(key, 0.0) + t.user + t.system
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.forward_bench")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    got: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="concord-forward-bench-") as tmp, Procs() as procs:
        system = Concord(procs, Path(tmp))
        system.start()
        try:
            for r in range(args.rounds):
                for clients in CLIENTS:
                    for via in VIAS:
                        spec = LoadSpec("concord", endpoints(system, via), "put", clients,
                                        args.duration, 10_000_000, 100_000, 0)
                        role_of = roles(system, via)
                        c0, st0 = server_cpu_s(system), cpu_by_stage(system, role_of)
                        s = run_load(spec, clients)
                        cpu_us = (server_cpu_s(system) - c0) / s.ok * 1e6 if s.ok else float("nan")
                        st1 = cpu_by_stage(system, role_of)
                        stages = " ".join(f"{k.replace(' ', '.')}={(v - st0.get(k, 0.0)) / max(1, s.ok) * 1e6:.0f}"
                                          for k, v in sorted(st1.items()))
                        print(f"round={r} via={via} clients={clients} ok={s.ok} errors={s.errors} "
                              f"writes/s={s.ops_per_s:.0f} p50={s.p50_us / 1000:.2f}ms "
                              f"p99={s.p99_us / 1000:.2f}ms server_cpu/put={cpu_us:.0f}us "
                              f"first_error={s.first_error!r}\n    cpu/put us: {stages}", flush=True)
                        if not s.errors:
                            got.setdefault((via, clients), []).append(
                                (s.ops_per_s, s.p50_us, s.p99_us, cpu_us))
        finally:
            system.stop()
    for clients in CLIENTS:
        if any((via, clients) not in got for via in VIAS):
            print(f"clients={clients}: no error-free run for one of leader, follower")
            continue
        med = {via: [statistics.median(x[i] for x in got[(via, clients)]) for i in range(4)]
               for via in VIAS}
        lead, fol = med["leader"], med["follower"]
        print(f"clients={clients} writes/s leader={lead[0]:.0f} follower={fol[0]:.0f} "
              f"ratio={fol[0] / lead[0]:.2f}; p50 leader={lead[1] / 1000:.2f}ms "
              f"follower={fol[1] / 1000:.2f}ms (+{(fol[1] - lead[1]) / 1000:.2f}ms); "
              f"server CPU/put leader={lead[3]:.0f}us follower={fol[3]:.0f}us "
              f"(+{fol[3] - lead[3]:.0f}us)")


if __name__ == "__main__":
    main()
