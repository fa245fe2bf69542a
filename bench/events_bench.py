"""
Change-stream throughput: events per second delivered to 1 and to 10 subscribers while
writes run.

A standalone publisher process (tests/events/feed.py: a KvStateMachine applying put
commands in batches, an EventStream publishing its changes, a ROUTER serving `status`
and `events`) and one process per subscriber (`Client.subscribe`, every event checked
in order, gaps repaired through `events`). Each write is a put of its own key, so each
subscriber must receive exactly `--writes` events. Per run it prints the write rate,
the delivery rate per subscriber (first to last event) and in aggregate, and the gaps
repaired and events fetched through `events` (summed over subscribers).

    python bench/events_bench.py [--writes 50000] [--subscribers 1 10] [--sndhwm 10000]
    python bench/events_bench.py --nodes 3 [--writes 20000] [--subscribers 1 10]

With `--nodes N` the publisher is a real cluster instead (`python -m concord.supervisor`
processes started with tests/integration/cluster.py): the writer sends `put_many`
batches of `--bulk` keys through `concord.client.Client`, and the subscribers subscribe
at a follower (the leader when N = 1); the write rate is then acknowledged writes.

    python bench/events_bench.py --nodes 3 --latency [--writes 1000] [--rounds 3]
        [--subscribers 10]

`--latency` measures the write latency the change stream adds: this (the client) process
sends sequential single `put`s (one in flight, `concord.client.Client`, leader first in
its endpoint list) and times each one, under three conditions: no subscriber, the
`--subscribers` processes subscribed to all keys (prefix "") at a follower, and the same
at the leader. Every subscriber checks each event (key and value, in order; exactly
`--writes` per segment). Each round runs `--writes` puts per condition, conditions
rotated from round to round so the machine's other load hits all alike; the subscriber
processes stay up (idle on a pipe) for the whole run and subscribe and unsubscribe per
segment, so their start-up is never inside a timed segment. Printed: p50/p99/mean per
condition (pooled over rounds), the p50 of each round, and the added latency against no
subscriber (difference and ratio).

Measured 2026-11-22 (2 cores shared with other engineers' runs, one of them a shm bench):

    python bench/events_bench.py --nodes 3 --latency --writes 1000 --rounds 3 --subscribers 10

                 condition  writes  p50 ms  p99 ms  mean ms   p50 per round ms
    --------------------------------------------------------------------------
             0 subscribers    3000    5.26   11.70     5.61     5.66 4.49 5.54
       10 subs at follower    3000    9.03   17.10     9.27     8.68 9.56 8.90
         10 subs at leader    3000    7.62   15.33     7.95     8.84 6.94 7.01
    added by 10 subs at follower: p50 +3.77 ms (x1.72), p99 +5.40 ms (x1.46)
    added by 10 subs at leader: p50 +2.36 ms (x1.45), p99 +3.63 ms (x1.31)
    subscriber gaps repaired=0 events fetched=0 (summed)

The subscriber processes run on the same 2 cores as the 3 nodes and the writer, so the
added latency includes their own CPU use (decoding and checking 10 copies of each event),
not only the publishing node's cost; this run does not separate the two.

Spawned processes, each with its own zmq context. The machine's other load shows in
the figures: compare runs made together.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from multiprocessing.connection import Connection

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_feed(conn: Connection, sndhwm: int, batch: int) -> None:
    from tests.events.feed import Feed  # noqa: PLC0415

    feed = Feed("bench", sndhwm=sndhwm, batch=batch, noop_every=0, history_entries=1_000_000,
                history_bytes=1 << 30)
    conn.send(feed.client_endpoint)
    try:
        while True:
            command = conn.recv()
            if command is None:
                break
            writes = int(command)
            started = time.perf_counter()
            for n in range(writes):
                feed.submit("put", {"key": f"bench:{n}", "value": {"n": n, "pad": "x" * 32}})
            while not feed.idle():
                time.sleep(0.001)
            conn.send((time.perf_counter() - started, feed.stream.published))
    finally:
        feed.stop()


def run_subscriber(conn: Connection, endpoint: str, writes: int, hwm: int) -> None:
    from concord.client import Client  # noqa: PLC0415

    with Client(endpoint, shm=False, timeout_s=10.0) as client, \
            client.subscribe(prefix="bench:", hwm=hwm) as sub:
        conn.send("ready")
        first = last = 0.0
        count = 0
        expected = 0
        while count < writes:
            event = sub.next(30.0)
            if event is None:
                break
            if event.key != f"bench:{expected}":
                conn.send(("error", f"event {count} is {event.key}, expected bench:{expected}"))
                return
            expected += 1
            if count == 0:
                first = time.perf_counter()
            last = time.perf_counter()
            count += 1
        conn.send(("done", count, last - first, sub.gaps, sub.fetched))


def run(writes: int, subscribers: int, sndhwm: int, hwm: int, batch: int) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    feed_conn, child = ctx.Pipe()
    feed = ctx.Process(target=run_feed, args=(child, sndhwm, batch))
    feed.start()
    procs = [feed]
    try:
        endpoint = feed_conn.recv()
        conns = []
        for _ in range(subscribers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=run_subscriber, args=(child, endpoint, writes, hwm))
            proc.start()
            procs.append(proc)
            conns.append(parent)
        for conn in conns:
            assert "ready" == conn.recv()
        feed_conn.send(writes)
        write_s, published = feed_conn.recv()
        results = [conn.recv() for conn in conns]
        feed_conn.send(None)
        errors = [r for r in results if r[0] != "done" or r[1] != writes]
        if errors:
            raise SystemExit(f"subscriber failed: {errors[0]}")
        rates = [r[1] / r[2] if r[2] > 0 else float("inf") for r in results]
        return {
            "subscribers": subscribers,
            "writes_per_s": writes / write_s,
            "per_sub_per_s": min(rates),
            "aggregate_per_s": sum(rates),
            "gaps": sum(r[3] for r in results),
            "fetched": sum(r[4] for r in results),
            "published": published,
        }
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()


def run_cluster(writes: int, subscribers: int, hwm: int, nodes: int, bulk: int) -> dict[str, float]:
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from concord.client import Client  # noqa: PLC0415
    from tests.integration.cluster import Cluster  # noqa: PLC0415

    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="concord-bench-") as tmp:
        c = Cluster(Path(tmp) / "c", nodes, events={"history_entries": max(10_000, 2 * writes)},
                    logging={"level": "WARNING"})
        c.tmp_path.mkdir(parents=True)
        procs = []
        try:
            c.start()
            leader = c.wait_leader()
            target = next((n for n in c.ids if n != leader), leader)
            conns = []
            for _ in range(subscribers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=run_subscriber,
                                   args=(child, c.nodes[target].client, writes, hwm))
                proc.start()
                procs.append(proc)
                conns.append(parent)
            for conn in conns:
                assert "ready" == conn.recv()
            with Client([c.nodes[n].client for n in c.ids], shm=False, timeout_s=30.0) as client:
                started = time.perf_counter()
                for base in range(0, writes, bulk):
                    client.put_many([(f"bench:{n}", {"n": n, "pad": "x" * 32})
                                     for n in range(base, min(writes, base + bulk))])
                write_s = time.perf_counter() - started
            results = [conn.recv() for conn in conns]
        finally:
            for proc in procs:
                proc.join(60)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
            c.stop()
    errors = [r for r in results if r[0] != "done" or r[1] != writes]
    if errors:
        raise SystemExit(f"subscriber failed: {errors[0]}")
    rates = [r[1] / r[2] if r[2] > 0 else float("inf") for r in results]
    return {
        "subscribers": subscribers,
        "writes_per_s": writes / write_s,
        "per_sub_per_s": min(rates),
        "aggregate_per_s": sum(rates),
        "gaps": sum(r[3] for r in results),
        "fetched": sum(r[4] for r in results),
        "published": writes,
    }


def run_latency_subscriber(conn: Connection, hwm: int) -> None:
    """Per command (endpoint, tag, writes): subscribe to all keys, check `writes` events."""
    from concord.client import Client  # noqa: PLC0415

    while True:
        command = conn.recv()
        if command is None:
            return
        endpoint, tag, writes = command
        with Client(endpoint, shm=False, timeout_s=10.0) as client, \
                client.subscribe(prefix="", hwm=hwm) as sub:
            conn.send("ready")
            count = 0
            error = ""
            while count < writes:
                event = sub.next(30.0)
                if event is None:
                    error = f"timeout after {count} events"
                    break
                want = f"lat:{tag}:{count}"
                if event.key != want or event.value != {"n": count, "pad": "x" * 32}:
                    error = f"event {count} is {event.key}={event.value!r}, expected {want}"
                    break
                count += 1
            conn.send(("error", error) if error else ("done", count, sub.gaps, sub.fetched))


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def run_latency(writes: int, rounds: int, subscribers: int, hwm: int, nodes: int) -> None:
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from concord.client import Client  # noqa: PLC0415
    from tests.integration.cluster import Cluster  # noqa: PLC0415

    ctx = multiprocessing.get_context("spawn")
    conditions = ["none", "follower", "leader"]
    samples: dict[str, list[list[float]]] = {c: [] for c in conditions}
    gaps = fetched = 0
    with tempfile.TemporaryDirectory(prefix="concord-bench-") as tmp:
        c = Cluster(Path(tmp) / "c", nodes,
                    events={"history_entries": max(10_000, 2 * writes * rounds * 3)},
                    logging={"level": "WARNING"})
        c.tmp_path.mkdir(parents=True)
        procs = []
        conns: list[Connection] = []
        try:
            c.start()
            leader = c.wait_leader()
            follower = next(n for n in c.ids if n != leader)
            for _ in range(subscribers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=run_latency_subscriber, args=(child, hwm))
                proc.start()
                procs.append(proc)
                conns.append(parent)
            endpoints = [c.nodes[leader].client] + [c.nodes[n].client for n in c.ids
                                                    if n != leader]
            print(f"leader={leader} follower={follower} (subscribers at the follower: "
                  f"{follower}; at the leader: {leader})")
            with Client(endpoints, shm=False, timeout_s=30.0) as client:
                for n in range(200):  # warm-up, not recorded
                    client.put(f"warm:{n}", {"n": n, "pad": "x" * 32})
                for r in range(rounds):
                    for k in range(len(conditions)):
                        cond = conditions[(k + r) % len(conditions)]
                        tag = f"{r}:{cond}"
                        active = conns if cond != "none" else []
                        target = follower if cond == "follower" else leader
                        for conn in active:
                            conn.send((c.nodes[target].client, tag, writes))
                        for conn in active:
                            ready = conn.recv()
                            assert "ready" == ready, ready
                        times = []
                        for n in range(writes):
                            started = time.perf_counter()
                            client.put(f"lat:{tag}:{n}", {"n": n, "pad": "x" * 32})
                            times.append(time.perf_counter() - started)
                        samples[cond].append(times)
                        for conn in active:
                            result = conn.recv()
                            if result[0] != "done" or result[1] != writes:
                                raise SystemExit(f"subscriber failed ({tag}): {result}")
                            gaps += result[2]
                            fetched += result[3]
                        now = c.leader()
                        if now != leader:
                            raise SystemExit(f"leader changed {leader} -> {now} in {tag}")
        finally:
            for conn in conns:
                try:
                    conn.send(None)
                except OSError:
                    pass
            for proc in procs:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
            c.stop()
            pids, segs = c.leftovers()
            if pids or segs:
                print(f"LEFTOVERS pids={pids} shm={segs}")
    header = (f"{'condition':>22} {'writes':>7} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8} "
              f"{'p50 per round ms':>18}")
    print(header)
    print("-" * len(header))
    stats: dict[str, tuple[float, float]] = {}
    for cond in conditions:
        pooled = sorted(t for times in samples[cond] for t in times)
        p50, p99 = percentile(pooled, 50), percentile(pooled, 99)
        stats[cond] = (p50, p99)
        per_round = " ".join(f"{percentile(sorted(t), 50) * 1e3:.2f}" for t in samples[cond])
        label = "0 subscribers" if cond == "none" else f"{subscribers} subs at {cond}"
        print(f"{label:>22} {len(pooled):>7} {p50 * 1e3:>7.2f} {p99 * 1e3:>7.2f} "
              f"{sum(pooled) / len(pooled) * 1e3:>8.2f} {per_round:>18}")
    base50, base99 = stats["none"]
    for cond in conditions[1:]:
        p50, p99 = stats[cond]
        print(f"added by {subscribers} subs at {cond}: p50 {(p50 - base50) * 1e3:+.2f} ms "
              f"(x{p50 / base50:.2f}), p99 {(p99 - base99) * 1e3:+.2f} ms (x{p99 / base99:.2f})")
    print(f"subscriber gaps repaired={gaps} events fetched={fetched} (summed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=50_000)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--sndhwm", type=int, default=10_000, help="publisher SNDHWM")
    parser.add_argument("--hwm", type=int, default=10_000, help="subscriber RCVHWM")
    parser.add_argument("--batch", type=int, default=256, help="commands applied per round")
    parser.add_argument("--nodes", type=int, default=0,
                        help="publish from a real cluster of this many nodes (0: standalone)")
    parser.add_argument("--bulk", type=int, default=100, help="keys per put_many (--nodes)")
    parser.add_argument("--latency", action="store_true",
                        help="per-write latency with 0 and --subscribers subscribers (--nodes)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --latency")
    args = parser.parse_args()
    if args.latency:
        if not args.nodes:
            parser.error("--latency needs --nodes")
        count = max(args.subscribers)
        print(f"latency: cluster of {args.nodes}, sequential put, writes={args.writes} per "
              f"segment, rounds={args.rounds}, subscribers={count} hwm={args.hwm} "
              f"cpus={os.cpu_count()}")
        run_latency(args.writes, args.rounds, count, args.hwm, args.nodes)
        return
    where = f"cluster of {args.nodes}, put_many of {args.bulk}" if args.nodes else "standalone"
    print(f"publisher={where} writes={args.writes} sndhwm={args.sndhwm} hwm={args.hwm} "
          f"batch={args.batch} cpus={os.cpu_count()}")
    header = (f"{'subscribers':>11} {'writes/s':>10} {'events/s/sub (min)':>19} "
              f"{'events/s total':>15} {'gaps':>6} {'fetched':>8}")
    print(header)
    print("-" * len(header))
    for count in args.subscribers:
        if args.nodes:
            r = run_cluster(args.writes, count, args.hwm, args.nodes, args.bulk)
        else:
            r = run(args.writes, count, args.sndhwm, args.hwm, args.batch)
        print(f"{r['subscribers']:>11} {r['writes_per_s']:>10,.0f} {r['per_sub_per_s']:>19,.0f} "
              f"{r['aggregate_per_s']:>15,.0f} {r['gaps']:>6} {r['fetched']:>8}")


if __name__ == "__main__":
    main()
