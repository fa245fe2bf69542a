"""
Cost of the audit log and of tracing (issue 20): write throughput of a 3-node cluster
with each of them on against off, at 1 and 128 clients, in one run.

    python bench/observability_bench.py [--seconds 5] [--rounds 2] [--clients 1,128]
                                        [--variants off,audit,tracing,tracing-all]

Variants (each its own 3-node cluster, all started up front and idle while another is
measured; the order rotates each round so the machine's other load hits them alike):

    off          every observability feature off (the defaults)
    audit        [audit] enabled, fsync "interval" (1 s, the default), no loggable prefix
    audit-always [audit] enabled, fsync "always" (fsynced before each reply batch)
    tracing      [tracing] enabled, sample_ratio 0.01 (the default), file exporter
    tracing-all  [tracing] enabled, sample_ratio 1.0: every request traced

The load is bench/load.py's closed loop of `put`s (64-byte values, 10,000 keys) over raw
zmq DEALERs (no traceparent: the front door samples), spread over the load processes;
printed per variant and client count: the median over rounds of writes/s, of p50
latency and of the CPU the cluster's processes spent per write (user + system, all nodes,
from psutil: the figure least disturbed by other load on the machine), and their ratios
to `off` (medians: other load hits single rounds). Figures of a run are in docs/observability-audit.md and
docs/observability-tracing.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.drivers import LoadSpec  # noqa: E402
from bench.load import run_load  # noqa: E402
from bench.procs import Procs  # noqa: E402
from bench.systems import Concord  # noqa: E402

import psutil  # noqa: E402

SECRET = "bench-audit-secret"


def variant_settings(name: str, workdir: Path) -> dict[str, dict[str, object]]:
    secret = workdir / "audit.secret"
    secret.write_text(SECRET)
    table: dict[str, dict[str, dict[str, object]]] = {
        "off": {},
        "audit": {"audit": {"enabled": True, "secret_file": str(secret)}},
        "audit-always": {"audit": {"enabled": True, "secret_file": str(secret), "fsync": "always"}},
        "tracing": {"tracing": {"enabled": True, "sample_ratio": 0.01}},
        "tracing-all": {"tracing": {"enabled": True, "sample_ratio": 1.0}},
    }
    return table[name]


def cluster_cpu_s(system: Concord) -> float:
    """CPU seconds (user + system) used so far by every process of the cluster's nodes."""
    total = 0.0
    for m in system.members:
        if m.pid is None:
            continue
        try:
            root = psutil.Process(m.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", default="1,128")
    parser.add_argument("--variants", default="off,audit,tracing,tracing-all")
    args = parser.parse_args()
    variants = args.variants.split(",")
    client_counts = [int(c) for c in args.clients.split(",")]
    procs = Procs()
    systems: dict[str, Concord] = {}
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}  # server CPU microseconds per put
    with tempfile.TemporaryDirectory(prefix="concord-obsbench-") as tmp:
        try:
            for name in variants:
                workdir = Path(tmp) / name
                workdir.mkdir()
                system = Concord(procs, workdir)
                system.settings = {**Concord.settings, **variant_settings(name, workdir)}
                system.start()
                systems[name] = system
                print(f"started {name}", flush=True)
            for round_ in range(args.rounds):
                order = variants[round_ % len(variants):] + variants[:round_ % len(variants)]
                for clients in client_counts:
                    for name in order:
                        system = systems[name]
                        spec = LoadSpec("concord", system.endpoints_leader_first(), "put", clients,
                                        args.seconds, 2_000_000, 10_000, 0)
                        cpu_before = cluster_cpu_s(system)
                        summary = run_load(spec, clients)
                        if summary.errors:
                            # A leader change mid-round (the machine is shared): not a
                            # measurement of the variant; left out of the medians.
                            print(f"  {name} x{clients}: {summary.errors} errors, round left out: "
                                  f"{summary.first_error}")
                            continue
                        cpu.setdefault((name, clients), []).append(
                            (cluster_cpu_s(system) - cpu_before) / summary.ok * 1e6)
                        results.setdefault((name, clients), []).append(
                            (summary.ops_per_s, summary.p50_us))
                        print(f"round {round_} {name:>12} clients={clients:<4} "
                              f"{summary.ops_per_s:8.0f} put/s p50 {summary.p50_us / 1000:7.2f} ms "
                              f"server cpu {cpu.get((name, clients), [0.0])[-1]:6.0f} us/put",
                              flush=True)
        finally:
            for system in systems.values():
                system.stop()
    print()
    print(f"{'variant':>12} {'clients':>7} {'put/s':>8} {'p50 ms':>7} {'cpu us/put':>10} "
          f"{'put/s vs off':>13} {'p50 vs off':>11} {'cpu vs off':>11}")
    for clients in client_counts:
        base = results.get(("off", clients))
        base_rate = statistics.median(r for r, _ in base) if base else float("nan")
        base_p50 = statistics.median(p for _, p in base) / 1000 if base else float("nan")
        base_cpu = statistics.median(cpu.get(("off", clients), [float("nan")]))
        for name in variants:
            runs = results.get((name, clients))
            if not runs:
                print(f"{name:>12} {clients:>7} no round without errors")
                continue
            rate = statistics.median(r for r, _ in runs)
            p50 = statistics.median(p for _, p in runs) / 1000
            per_put = statistics.median(cpu.get((name, clients), [float("nan")]))
            print(f"{name:>12} {clients:>7} {rate:8.0f} {p50:7.2f} {per_put:10.0f} "
                  f"{rate / base_rate:13.3f} {p50 / base_p50:11.3f} {per_put / base_cpu:11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
