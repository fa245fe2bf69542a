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
    args = parser.parse_args()
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
