"""
Client concurrency: throughput of one `concord.aio.Client` with 128 requests in flight,
of one sync `concord.Client` shared by 16 threads, and of 128 single-request clients
(128 threads, each with its own `Client`: one request in flight each), in one run
against the same node(s).

    python bench/clients_bench.py [--nodes 1] [--seconds 5] [--rounds 2]

Each mode runs a write phase (`put` of its own key, 64-byte values) and a read phase
(`get` at `leader` consistency of keys written, over the wire: `shm=False`) for
`--seconds` each; modes are rotated from round to round so the machine's other load hits
them alike. Printed per mode and phase: requests completed per second (summed over
rounds) and p50/p99 latency. Every reply is checked (each get returns its key's value).

The clients run in this one process (Python threads share the GIL; the aio client is
one event loop), on the same cores as the node: the figures compare the client designs
on one machine, they are not the node's capacity.

Measured 2026-12-07, 1 node, 2 cores shared with other helpers' runs (a backup bench's
cluster was up):

    PYTHONPATH=$PWD nice -n 10 python3 bench/clients_bench.py --seconds 5 --rounds 2

                                mode   op    req/s  p50 ms  p99 ms  mean ms
    ------------------------------------------------------------------------
        aio.Client x1, 128 in flight  put     2287   44.19  188.85    56.00
        aio.Client x1, 128 in flight  get     4923   17.73  145.01    26.03
      Client x1 shared by 16 threads  put     1549    7.80   43.14    10.35
      Client x1 shared by 16 threads  get     3107    3.69   22.22     5.15
         128 Clients, 1 request each  put     1697   63.53  236.43    75.32
         128 Clients, 1 request each  get     1678   61.67  250.69    76.14

Re-measured 2026-12-07 07:47 UTC after exactly-once sessions moved to one client_id with
many writes in flight (min_seq; writes of the aio client and of the shared Client now
share ONE session and the node keeps up to 128 results for it), same command, 1 node,
load average about 20 (other helpers' runs):

                                mode   op    req/s  p50 ms  p99 ms  mean ms
    ------------------------------------------------------------------------
        aio.Client x1, 128 in flight  put     2315   40.62  300.38    55.66
        aio.Client x1, 128 in flight  get     3007   26.52  388.69    42.82
      Client x1 shared by 16 threads  put     1788    5.64   63.73     8.95
      Client x1 shared by 16 threads  get     3418    3.27   34.71     4.68
         128 Clients, 1 request each  put     1978   48.42  449.68    64.75
         128 Clients, 1 request each  get     2003   56.29  188.55    63.82

Writes held their rate with one session for all 128 in flight (aio 2315 put/s, 1.17x the
128 clients; earlier 2287 with 128 session ids); the reads' spread between the two runs
is the machine's load.

One aio.Client with 128 requests in flight on one connection does 1.35x the writes and
2.9x the reads of 128 separate clients (128 threads, 128 connections) in the same
process; one Client shared by 16 threads matches the 128 clients' write rate with an
eighth of the concurrency and a ninth of the p50 latency. A 1-second smoke run the same
day gave aio 3750 put/s, 7057 get/s: the machine's load varies run to run, compare rows
of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

VALUE = "v" * 64


def _pct(lat: list[float], q: float) -> float:
    if not lat:
        return float("nan")
    lat = sorted(lat)
    return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0


def _threads(n: int, body: Callable[[int, float, list[float]], None], seconds: float) -> list[float]:
    """Run `body(worker, stop_at, latencies)` on n threads; return all latencies."""
    lats: list[list[float]] = [[] for _ in range(n)]
    start = threading.Barrier(n + 1)
    stop_at = [0.0]

    def run(i: int) -> None:
        start.wait()
        body(i, stop_at[0], lats[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    start.wait()
    for t in threads:
        t.join()
    return [x for part in lats for x in part]


def sync_phase(endpoints: list[str], threads: int, shared: bool, write: bool, seconds: float,
               tag: str) -> list[float]:
    from concord.client import Client  # noqa: PLC0415

    def make() -> Client:
        return Client(endpoints, shm=False, timeout_s=30.0)

    one = make() if shared else None
    own = [make() for _ in range(threads)] if not shared else []
    try:
        def body(i: int, stop_at: float, lat: list[float]) -> None:
            client = one if one is not None else own[i]
            n = 0
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                key = f"{tag}:{i}:{n % 200}"
                if write:
                    client.put(key, VALUE)
                elif VALUE != client.get(key, default=VALUE):
                    raise SystemExit(f"wrong value for {key}")
                lat.append(time.perf_counter() - t0)
                n += 1

        return _threads(threads, body, seconds)
    finally:
        for c in ([one] if one is not None else own):
            c.close()


def aio_phase(endpoints: list[str], concurrency: int, write: bool, seconds: float, tag: str) -> list[float]:
    from concord import aio  # noqa: PLC0415

    async def main() -> list[float]:
        lat: list[float] = []
        async with aio.Client(endpoints, timeout_s=30.0) as client:
            stop_at = time.perf_counter() + seconds

            async def worker(i: int) -> None:
                n = 0
                while (t0 := time.perf_counter()) < stop_at:
                    key = f"{tag}:{i}:{n % 200}"
                    if write:
                        await client.put(key, VALUE)
                    elif VALUE != await client.get(key, default=VALUE):
                        raise SystemExit(f"wrong value for {key}")
                    lat.append(time.perf_counter() - t0)
                    n += 1

            await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return lat

    return asyncio.run(main())


MODES: dict[str, Callable[[list[str], bool, float], list[float]]] = {
    "aio.Client x1, 128 in flight": lambda eps, w, s: aio_phase(eps, 128, w, s, "aio"),
    "Client x1 shared by 16 threads": lambda eps, w, s: sync_phase(eps, 16, True, w, s, "shared"),
    "128 Clients, 1 request each": lambda eps, w, s: sync_phase(eps, 128, False, w, s, "single"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from tests.integration.cluster import Cluster  # noqa: PLC0415

    results: dict[tuple[str, str], list[float]] = {}
    counts: dict[tuple[str, str], int] = {}
    with tempfile.TemporaryDirectory(prefix="concord-bench-") as tmp:
        c = Cluster(Path(tmp) / "c", args.nodes, logging={"level": "WARNING"})
        c.tmp_path.mkdir(parents=True)
        try:
            c.start()
            leader = c.wait_leader()
            endpoints = [c.nodes[leader].client] + [c.nodes[n].client for n in c.ids if n != leader]
            names = list(MODES)
            for r in range(args.rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    for phase, write in (("put", True), ("get", False)):
                        lat = MODES[name](endpoints, write, args.seconds)
                        results.setdefault((name, phase), []).extend(lat)
                        counts[(name, phase)] = counts.get((name, phase), 0) + len(lat)
        finally:
            c.stop()
    total_s = args.seconds * args.rounds
    print(f"{'mode':>32} {'op':>4} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8}")
    print("-" * 72)
    for (name, phase), lat in results.items():
        print(f"{name:>32} {phase:>4} {counts[(name, phase)] / total_s:8.0f} {_pct(lat, 0.5):7.2f} "
              f"{_pct(lat, 0.99):7.2f} {statistics.fmean(lat) * 1000:8.2f}")


if __name__ == "__main__":
    main()
