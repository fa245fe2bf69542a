"""
The benchmark scenarios and the run that measures them.

Results go to bench/out/results-<size>.json (format version 1, docs/benchmarks.md):
  {"meta": {"format_version": 1, ...}, "results": {scenario: {system: {variant: [run, ...]}}}}
where a run is a dict (ops_per_s, p50_us, p99_us, ... or ms / seconds / bytes_per_key).

Fairness: all clusters run at once during the steady-state scenarios, and the runs are
interleaved (run 1 of every system, then run 2 ...), so a change in the shared machine's
load hits every system alike. Failover and restart use fresh clusters, one system at a
time, with the others stopped.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from bench.drivers import LoadSpec, key_name
from bench.load import LoadSummary, run_load
from bench.procs import Procs
from bench.systems import SYSTEMS, Concord, Etcd, PySyncObj, Redis, System

log = logging.getLogger(__name__)

OUT = Path(__file__).resolve().parent / "out"
RESULTS_FORMAT = 1

SCENARIOS = ("write_latency", "write_throughput", "read_latency", "read_throughput",
             "shm_reads", "failover", "restart", "scale")

#: Read levels per system, in the order of Concord's levels they are compared with.
READ_LEVELS: dict[str, list[str]] = {
    "concord": ["eventual", "leader", "strong"],
    "etcd": ["serializable", "linearizable"],
    "etcd-gw": ["serializable", "linearizable"],
    "pysyncobj": ["local"],
    "redis": ["get"],
}


@dataclass(frozen=True)
class Size:
    name: str
    runs: int  # repetitions of every measurement (median and spread reported)
    latency_ops: int  # sequential requests of a latency probe
    seconds: float  # duration of a throughput point
    keys: int  # keys the read scenarios read (loaded first)
    restart_keys: int
    failovers: int
    shm_seconds: float
    shm_keys: int = 100_000  # keys the shm_reads scenario reads (the goal's key count; loaded first)
    scale_keys: tuple[int, ...] = (1_000, 10_000)  # key counts of the scale scenario
    scale_values: tuple[int, ...] = (100, 1024, 10 * 1024, 100 * 1024)  # value sizes (bytes)


SIZES = {
    "short": Size("short", runs=1, latency_ops=200, seconds=1.5, keys=1000, restart_keys=10_000,
                  failovers=1, shm_seconds=0.5),
    "full": Size("full", runs=3, latency_ops=1000, seconds=3.0, keys=10_000, restart_keys=1_000_000,
                 failovers=3, shm_seconds=2.0, scale_keys=(1_000, 10_000, 100_000, 1_000_000)),
}

WRITE_CLIENTS = (1, 64, 128)
READ_CLIENTS = (1, 64, 128)  # read_throughput variants are "<level>@<clients>"
MAX_OPS = 2_000_000  # bound on every load loop


Results = dict[str, dict[str, dict[str, list[dict[str, object]]]]]


RUN_AT = {"date_utc": ""}  # the run's start time, stamped on every record it makes


def _record(results: Results, scenario: str, system: str, variant: str, run: dict[str, object]) -> None:
    run["at"] = RUN_AT["date_utc"]
    results.setdefault(scenario, {}).setdefault(system, {}).setdefault(variant, []).append(run)
    brief = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in run.items() if k != "latencies_us"}
    print(f"  {scenario:17s} {system:9s} {variant:13s} {brief}", flush=True)


def member_processes(system: System) -> Iterator[tuple[str, psutil.Process]]:
    """(member id, process) of every live process of the system's members (their trees)."""
    for m in system.members:
        if m.pid is None:
            continue
        for pid in system.procs.pids_of(m.pid):
            try:
                yield m.id, psutil.Process(pid)
            except psutil.NoSuchProcess:
                continue


def server_cpu_s(system: System) -> float:
    """CPU seconds used so far by every process of the system's members (trees)."""
    total = 0.0
    for _, proc in member_processes(system):
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def _summary_run(s: LoadSummary, keep_latencies: bool, server_cpu: float | None = None) -> dict[str, object]:
    d = asdict(s)
    if server_cpu is not None and s.ok:
        # where the time goes: CPU per request on each side (2 cores shared by both)
        d["server_cpu_us_per_op"] = server_cpu / s.ok * 1e6
        d["client_cpu_us_per_op"] = s.client_cpu_s / s.ok * 1e6
    if not keep_latencies:
        d.pop("latencies_us")
    return d


def measure_load(system: System, op: str, clients: int, size: Size, api: str = "",
                 latency_probe: bool = False) -> LoadSummary:
    """One closed-loop run against a system."""
    max_ops = size.latency_ops if latency_probe else MAX_OPS
    # a latency probe stops after latency_ops requests or 10 s (PySyncObj: ~50 ms a write)
    duration = 10.0 if latency_probe else size.seconds
    if isinstance(system, PySyncObj):
        return system.run(op, clients, duration, max_ops, size.keys)
    spec = LoadSpec(system.name, system.endpoints_leader_first(), op, clients, duration, max_ops,
                    size.keys, 0, api)
    return run_load(spec, clients)


def steady_state(systems: list[System], size: Size, only: set[str], results: Results) -> None:
    """write/read latency and throughput, and shm reads, interleaved across systems."""
    for s in systems:
        print(f"loading {size.keys} keys into {s.name}", flush=True)
        s.load_keys(size.keys)
    for run in range(size.runs):
        keep = run == 0
        if "write_latency" in only:
            for s in systems:
                r = measure_load(s, "put", 1, size, api="client", latency_probe=True)
                _record(results, "write_latency", s.name, "1", _summary_run(r, keep))
        if "write_throughput" in only:
            for clients in WRITE_CLIENTS:
                for s in systems:
                    c0 = server_cpu_s(s)
                    r = measure_load(s, "put", clients, size)
                    _record(results, "write_throughput", s.name, str(clients),
                            _summary_run(r, keep, server_cpu_s(s) - c0))
        if "read_latency" in only:
            for s in systems:
                for level in READ_LEVELS[s.name]:
                    r = measure_load(s, f"get:{level}", 1, size, api="client", latency_probe=True)
                    _record(results, "read_latency", s.name, level, _summary_run(r, keep))
        if "read_throughput" in only:
            for clients in READ_CLIENTS:
                for s in systems:
                    for level in READ_LEVELS[s.name]:
                        c0 = server_cpu_s(s)
                        r = measure_load(s, f"get:{level}", clients, size)
                        _record(results, "read_throughput", s.name, f"{level}@{clients}",
                                _summary_run(r, keep, server_cpu_s(s) - c0))
    if "shm_reads" in only:
        # NB: after the other scenarios, so that they run with size.keys keys stored
        for s in systems:
            if isinstance(s, Concord):
                if size.shm_keys > size.keys:
                    print(f"loading keys {size.keys}..{size.shm_keys - 1} into {s.name}", flush=True)
                    s.load_keys(size.shm_keys, start=size.keys)
                for _ in range(size.runs):
                    for variant, r2 in shm_reads(s, size).items():
                        _record(results, "shm_reads", s.name, variant, r2)


# -- same-host shared-memory reads ---------------------------------------------------------

def _shm_child(endpoint: str, keys: int, seconds: float, out: "multiprocessing.Queue[dict[str, object]]") -> None:
    """An application process: Client(shm=True) reads, then LocalStore.read (bench/shm_get.py)."""
    from bench.shm_get import measure

    try:
        got: dict[str, object] = {**measure(endpoint, keys, seconds)}
        out.put(got)
    except RuntimeError as exc:
        out.put({"error": str(exc)})


def shm_reads(system: Concord, size: Size) -> dict[str, dict[str, object]]:
    """Reads per second of one application process on the leader's host (spawned)."""
    ctx = multiprocessing.get_context("spawn")
    q: multiprocessing.Queue[dict[str, object]] = ctx.Queue()
    p = ctx.Process(target=_shm_child, args=(system.endpoints_leader_first()[0], size.shm_keys,
                                              size.shm_seconds, q), daemon=True)
    p.start()
    try:
        got = q.get(timeout=size.shm_seconds * 3 + 120)
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join(5)
    if "error" in got:
        raise RuntimeError(str(got["error"]))
    return {k: v for k, v in got.items() if isinstance(v, dict)}


# -- failover --------------------------------------------------------------------------------

def failover_once(s: System) -> float:
    """Milliseconds from SIGKILL of the leader (its whole process tree) to the next acked write."""
    li = s.leader_index()
    survivors = [m for i, m in enumerate(s.members) if i != li]
    if isinstance(s, Concord):
        from concord.client import Client
        eps = [m.endpoint for m in s.members]
        with Client(eps, shm=False) as c:  # the client's default settings
            c.put("failover-warm", 1)  # the client knows the leader now
            t0 = time.perf_counter()
            s.kill(li)
            c.put("failover", 1)
            return (time.perf_counter() - t0) * 1000
    if isinstance(s, Etcd):
        eps = [m.endpoint for m in survivors]
        assert s.write_probe("failover-warm", "1", eps, 2.0)
        pid = s.members[li].pid
        assert pid is not None
        t0 = time.perf_counter()
        s.procs.kill(pid)
        s.members[li].pid = None
        deadline = t0 + 20
        while time.perf_counter() < deadline:
            if s.write_probe("failover", "1", eps, 0.1):
                return (time.perf_counter() - t0) * 1000
        raise TimeoutError("etcd: no acknowledged write within 20 s of the kill")
    if isinstance(s, PySyncObj):
        pid = s.members[li].pid
        assert pid is not None
        t0w = time.time()
        s.procs.kill(pid)
        s.members[li].pid = None
        got = s.call(survivors[0], {"cmd": "write_until_ok", "key": "failover", "deadline_s": 20.0}, 30.0)
        if not got or not got.get("ok"):
            raise TimeoutError(f"pysyncobj: no acknowledged write within 20 s of the kill: {got}")
        return (float(got["acked_at"]) - t0w) * 1000  # type: ignore[arg-type]
    raise ValueError(f"no failover for {s.name}")


# -- restart and memory per key ----------------------------------------------------------------

def _tree_size(s: System, index: int) -> int:
    """How many processes member `index` runs now (its process tree)."""
    pid = s.members[index].pid
    return len(s.procs.pids_of(pid)) if pid is not None else 0


def restart_and_memory(s: System, keys: int) -> dict[str, object]:
    """Load `keys` keys; memory per key on the leader; SIGTERM all; seconds until served again."""
    from bench.procs import wait_for
    li = s.leader_index()
    before = s.memory_bytes(li)
    processes = _tree_size(s, li)
    t0 = time.perf_counter()
    s.load_keys(keys)
    load_s = time.perf_counter() - t0
    time.sleep(1.0)  # let followers finish applying before measuring
    li = s.leader_index()
    # The steady footprint, not a snapshot's: a snapshot child started near the end of
    # the load (Concord forks one every 16 MiB of writes) holds a copy-on-write copy of
    # the touched state while it serializes; wait until the tree is back to its size.
    t1 = time.perf_counter()
    wait_for(lambda: _tree_size(s, li) <= processes, 300.0, f"{s.name}'s snapshot children to end")
    settle_s = time.perf_counter() - t1
    after = s.memory_bytes(li)
    last = key_name(keys - 1)
    print(f"  {s.name}: {keys} keys loaded in {load_s:.1f} s; restarting", flush=True)
    s.stop()
    t0 = time.perf_counter()
    s.start(wait_leader=False)
    if isinstance(s, PySyncObj):
        def served() -> bool:
            st = s.call(s.members[s.leader_index(900.0)], {"cmd": "status"}, 1.0)
            return bool(st and int(st.get("keys", 0)) >= keys)  # type: ignore[call-overload]
    elif isinstance(s, Redis):
        def served() -> bool:
            return True
    else:
        def served() -> bool:
            return s.read_probe(last)
    wait_for(served, 900.0, f"{s.name} to serve key {last} after restart")
    restart_s = time.perf_counter() - t0
    return {"keys": keys, "load_s": load_s, "restart_s": restart_s, "settle_s": settle_s,
            "memory_before": before, "memory_after": after,
            "bytes_per_key": (after - before) / keys}


# -- how cost grows: keys, value size, cluster size ---------------------------------------------

SCALE_CLIENTS = 64
SCALE_READ = {"concord": "eventual", "etcd": "serializable"}


def _scale_point(s: System, size: Size, results: Results, axis: str, point: str, keys: int,
                 value_bytes: int, reads: bool = True) -> None:
    """Puts (and reads) at SCALE_CLIENTS clients: one record per op under scale/<system>."""
    eps = s.endpoints_leader_first()
    ops = ["put", f"get:{SCALE_READ[s.name]}"] if reads else ["put"]
    for op in ops:
        spec = LoadSpec(s.name, eps, op, SCALE_CLIENTS, size.seconds, MAX_OPS, keys, 0,
                        value_bytes=value_bytes)
        c0 = server_cpu_s(s)
        r = run_load(spec, SCALE_CLIENTS)
        _record(results, "scale", s.name, f"{axis}={point} {op.partition(':')[0]}",
                _summary_run(r, False, server_cpu_s(s) - c0))


def scale(systems: list[System], size: Size, results: Results) -> None:
    """Throughput and p99 against key count, value size and cluster size (Concord and etcd)."""
    for s in systems:
        if s.name not in SCALE_READ:
            continue
        s.start()
        loaded = 0
        for keys in size.scale_keys:
            print(f"  scale {s.name}: loading up to {keys} keys", flush=True)
            s.load_keys(keys, start=loaded)
            loaded = keys
            _scale_point(s, size, results, "keys", str(keys), keys, 100)
        s.wipe()
        s.start()
        s.load_keys(size.keys)
        for value_bytes in size.scale_values:
            _scale_point(s, size, results, "value_bytes", str(value_bytes), size.keys, value_bytes,
                         reads=False)
        s.wipe()
        for nodes in (3, 5):
            s.nodes = nodes
            s.start()
            s.load_keys(size.keys)
            _scale_point(s, size, results, "nodes", str(nodes), size.keys, 100)
            s.wipe()
        s.nodes = 3


# -- the run ---------------------------------------------------------------------------------

def machine_info() -> dict[str, object]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gb": round(
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
        "kernel": platform.release(), "python": sys.version.split()[0]}


def run(size_name: str, systems_names: list[str], only: set[str], size: Size | None = None,
        out_dir: Path = OUT) -> Path:
    """Measure every selected scenario; write bench/out/results-<size>.json; return its path."""
    size = size or SIZES[size_name]
    out_dir.mkdir(exist_ok=True)
    results: Results = {}
    meta: dict[str, object] = {
        "format_version": RESULTS_FORMAT,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "size": asdict(size),
        "machine": machine_info(), "loadavg_start": os.getloadavg(),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "systems": systems_names, "scenarios": sorted(only),
    }
    RUN_AT["date_utc"] = str(meta["date_utc"])
    path = out_dir / f"results-{size_name}.json"
    if path.exists():  # a partial run keeps the results of the other scenarios and systems
        old = json.loads(path.read_text())
        for scenario, per_system in old.get("results", {}).items():
            kept = {k: v for k, v in per_system.items() if scenario not in only or k not in systems_names}
            if kept:
                results[scenario] = kept
        meta["earlier_runs"] = [*old.get("meta", {}).get("earlier_runs", []),
                                {k: old.get("meta", {}).get(k) for k in
                                 ("date_utc", "command", "scenarios", "loadavg_start", "loadavg_end",
                                  "versions")}]
    with tempfile.TemporaryDirectory(prefix="concord-bench-") as tmp, Procs() as procs:
        systems: list[System] = [SYSTEMS[n](procs, Path(tmp)) for n in systems_names]
        meta["versions"] = {s.name: s.version() for s in systems}
        meta["clients"] = {s.name: s.client_desc for s in systems}
        steady = only & {"write_latency", "write_throughput", "read_latency", "read_throughput", "shm_reads"}
        try:
            if steady:
                for s in systems:
                    s.start()
                steady_state(systems, size, steady, results)
                for s in systems:
                    s.wipe()
            if "failover" in only:
                for s in systems:
                    if isinstance(s, Redis):
                        continue  # one server: no failover
                    for _ in range(size.failovers):
                        s.start()
                        _record(results, "failover", s.name, "ms", {"ms": failover_once(s)})
                        s.wipe()
            if "scale" in only:
                scale(systems, size, results)
            if "restart" in only:
                for s in systems:
                    s.start()
                    try:
                        _record(results, "restart", s.name, str(size.restart_keys),
                                restart_and_memory(s, size.restart_keys))
                    except (TimeoutError, RuntimeError) as exc:
                        s.save_logs(out_dir / "failed-logs")
                        print(f"  restart {s.name} FAILED: {exc} (logs in {out_dir / 'failed-logs'})",
                              flush=True)
                        _record(results, "restart", s.name, str(size.restart_keys),
                                {"keys": size.restart_keys, "error": str(exc)})
                    s.wipe()
        finally:
            meta["loadavg_end"] = os.getloadavg()
            path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
            print(f"results written to {path}", flush=True)
    return path

