"""
The load generator: P spawned processes, each running K clients of one system (drivers).

`run_load` splits `clients` over `processes` (as evenly as possible), waits until every
process has connected its clients (a barrier), lets them run closed loops for
`duration_s` (or until `max_ops`), and merges the counts and latencies. Throughput is
the total acknowledged requests over the longest process's elapsed time.
"""

from __future__ import annotations

import math
import multiprocessing
import statistics
from array import array
from dataclasses import dataclass, replace
from multiprocessing.synchronize import Barrier

from bench.drivers import RUNNERS, LoadResult, LoadSpec


@dataclass(frozen=True)
class LoadSummary:
    """One measured load run."""

    clients: int
    processes: int
    ok: int
    errors: int
    elapsed_s: float
    ops_per_s: float
    p50_us: float
    p99_us: float
    first_error: str
    client_cpu_s: float  # CPU of the load processes while measuring
    latencies_us: list[float]  # a sample (at most 20,000), for the plots


def percentile(sorted_values: list[float] | array, q: float) -> float:  # type: ignore[type-arg]
    if not sorted_values:
        return float("nan")
    # nearest rank: the smallest value with at least q of the values at or below it
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[k])


def _child(spec: LoadSpec, barrier: Barrier, out: "multiprocessing.Queue[LoadResult | str]") -> None:
    try:
        def start() -> None:
            barrier.wait(120)

        result = RUNNERS[spec.system](spec, start)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        barrier.abort()
        out.put(f"{type(exc).__name__}: {exc}")
        return
    out.put(result)


def processes_for(clients: int) -> int:
    """Load processes for a client count: 1 client -> 1, else up to 4 (2-core host)."""
    return 1 if clients == 1 else min(4, clients)


def run_load(spec: LoadSpec, clients: int, processes: int | None = None) -> LoadSummary:
    """Run `clients` closed-loop clients of `spec` over `processes` spawned processes."""
    procs_n = processes or processes_for(clients)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs_n)
    queue: multiprocessing.Queue[LoadResult | str] = ctx.Queue()
    per = [clients // procs_n + (1 if i < clients % procs_n else 0) for i in range(procs_n)]
    children = []
    for i, k in enumerate(per):
        child_spec = replace(spec, clients=k, proc_index=i, max_ops=max(1, spec.max_ops // procs_n))
        p = ctx.Process(target=_child, args=(child_spec, barrier, queue), daemon=True)
        p.start()
        children.append(p)
    results: list[LoadResult] = []
    failures: list[str] = []
    try:
        for _ in children:
            got = queue.get(timeout=spec.duration_s + 180)
            if isinstance(got, str):
                failures.append(got)
            else:
                results.append(got)
    finally:
        for p in children:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
    if failures:
        raise RuntimeError(f"load process failed: {failures[0]}")
    return summarize(results, clients, procs_n)


def summarize(results: list[LoadResult], clients: int, processes: int) -> LoadSummary:
    """Merge the results of the load processes of one run."""
    lat = array("d")
    for r in results:
        lat.extend(r.latencies_us)
    ordered = sorted(lat)
    ok = sum(r.ok for r in results)
    elapsed = max(r.elapsed_s for r in results)
    step = max(1, len(ordered) // 20000)
    return LoadSummary(
        clients=clients, processes=processes, ok=ok, errors=sum(r.errors for r in results),
        elapsed_s=elapsed, ops_per_s=ok / elapsed if elapsed > 0 else 0.0,
        p50_us=percentile(ordered, 0.50), p99_us=percentile(ordered, 0.99),
        first_error=next((r.first_error for r in results if r.first_error), ""),
        client_cpu_s=sum(r.client_cpu_s for r in results),
        latencies_us=[float(x) for x in ordered[::step]],
    )


def median_spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max) of several runs."""
    return statistics.median(values), min(values), max(values)
