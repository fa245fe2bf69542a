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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=50_000)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--sndhwm", type=int, default=10_000, help="publisher SNDHWM")
    parser.add_argument("--hwm", type=int, default=10_000, help="subscriber RCVHWM")
    parser.add_argument("--batch", type=int, default=256, help="commands applied per round")
    args = parser.parse_args()
    print(f"writes={args.writes} sndhwm={args.sndhwm} hwm={args.hwm} batch={args.batch} "
          f"cpus={os.cpu_count()}")
    header = (f"{'subscribers':>11} {'writes/s':>10} {'events/s/sub (min)':>19} "
              f"{'events/s total':>15} {'gaps':>6} {'fetched':>8}")
    print(header)
    print("-" * len(header))
    for count in args.subscribers:
        r = run(args.writes, count, args.sndhwm, args.hwm, args.batch)
        print(f"{r['subscribers']:>11} {r['writes_per_s']:>10,.0f} {r['per_sub_per_s']:>19,.0f} "
              f"{r['aggregate_per_s']:>15,.0f} {r['gaps']:>6} {r['fetched']:>8}")


if __name__ == "__main__":
    main()
