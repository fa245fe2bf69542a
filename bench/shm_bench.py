"""
Lookups per second through the shared-memory store, next to a plain dict in the same run.

    python bench/shm_bench.py [--keys 100000 1000000] [--value-bytes 100] [--seconds 1.0]

For each key count: publishes that many keys (stored values of --value-bytes msgpack
bytes), attaches a reader view, then times random-order lookups returning the stored bytes
and decoded values (one call per key, and get_many in batches of 100), a plain dict lookup
of the same bytes, and prints ratios plus shm bytes per key. One process: the numbers are
what one read worker gets from one core. Results, not a timed test.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from concord.kv.record import Change, ChangeType, KeyRecord, Space  # noqa: E402
from concord.shm.layout import (  # noqa: E402
    DEFAULT_RING_CAPACITY,
    SegmentNames,
    ctl_size,
    read_gen_directory,
)
from concord.shm.publisher import Publisher  # noqa: E402
from concord.shm.segments import create_store, unlink_store  # noqa: E402
from concord.shm.view import ShmView  # noqa: E402


def _rate(fn: Callable[[], int], seconds: float, rounds: int = 3) -> float:
    """Best of `rounds` runs of ~seconds each of `fn` (returns ops done); ops per CPU second.

    CPU time of this process, not wall time: the host is shared, and a read worker that
    is scheduled gets the CPU rate.
    """
    fn()  # warm up
    best = 0.0
    for _ in range(rounds):
        ops = 0
        start = time.process_time()
        while True:
            ops += fn()
            elapsed = time.process_time() - start
            if elapsed >= seconds / rounds:
                break
        best = max(best, ops / elapsed)
    return best


def _rss_anon() -> int:
    """This process's anonymous resident memory (heap), bytes; mapped shm not included."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def bench(n_keys: int, value_bytes: int, seconds: float, seed: int, budget_s: float) -> None:
    rng = random.Random(seed)
    names = SegmentNames("bench", f"p{os.getpid()}")
    keys = [f"user:{i:08d}" for i in range(n_keys)]
    value = msgpack.packb("x" * (value_bytes - 2 if value_bytes < 34 else value_bytes - 2))
    assert len(value) == value_bytes or value_bytes < 34, len(value)
    raw_bytes = sum(len(k.encode()) for k in keys) + n_keys * len(value)
    # Distinct but equal key objects, as keys arriving off the wire would be: the dict
    # gets no identity shortcut the shm view cannot have. Distinct value objects too, as
    # any real store holds: one shared value object would stay in the CPU caches, and
    # returning it (a reference count) would cost nothing at 1M keys.
    plain = {(k + ".")[:-1]: (value + b".")[:-1] for k in keys}
    create_store(names, initial_bytes=1 << 20)
    try:
        pub = Publisher.attach(names)
        t0 = time.process_time()
        batch: list[Change] = []
        rev = 0
        for k in keys:
            rev += 1
            rec = KeyRecord(k, value, 0, rev, rev, 1, 0)
            batch.append(Change(ChangeType.PUT, Space.USER, k, rec, rev, 0))
            if len(batch) == 1000:
                pub.publish(batch, rev, rev, 0)
                batch = []
        pub.publish(batch, rev, rev, 0)
        publish_s = time.process_time() - t0
        t0 = time.process_time()
        heap0 = _rss_anon()
        view = ShmView.attach(names)
        attach_s = time.process_time() - t0  # a scan: no directory before a compaction
        view_heap = _rss_anon() - heap0
        stats = pub.stats()
        shm_total = ctl_size(DEFAULT_RING_CAPACITY) + stats.capacity_bytes
        order = keys[:]
        rng.shuffle(order)
        probe = order[: min(len(order), 200_000)]

        get_encoded = view.get_encoded
        get_value = view.get_value
        get_many = view.get_many_encoded
        get_many_values = view.get_many_values
        unpackb = msgpack.unpackb
        batches = [probe[i : i + 100] for i in range(0, len(probe), 100)]
        # A hot set (1,000 keys) next to uniform access over all keys: what a skewed
        # workload sees when its keys stay in the CPU caches.
        hot = probe[:1000] * (len(probe) // 1000)

        def shm_hot_bytes() -> int:
            for k in hot:
                get_encoded(k)
            return len(hot)

        def dict_hot_bytes() -> int:
            for k in hot:
                plain[k]
            return len(hot)

        def dict_bytes() -> int:
            for k in probe:
                plain[k]
            return len(probe)

        def dict_get_bytes() -> int:
            g = plain.get
            for k in probe:
                g(k)
            return len(probe)

        def dict_decoded() -> int:
            for k in probe:
                unpackb(plain[k])
            return len(probe)

        def shm_bytes() -> int:
            for k in probe:
                get_encoded(k)
            return len(probe)

        def shm_decoded() -> int:
            for k in probe:
                get_value(k)
            return len(probe)

        def shm_many_bytes() -> int:
            for b in batches:
                get_many(b)
            return len(probe)

        def shm_many_decoded() -> int:
            for b in batches:
                get_many_values(b)
            return len(probe)

        assert get_encoded(probe[0]) == value
        r = {
            "dict[k] bytes": _rate(dict_bytes, seconds),
            "dict.get bytes": _rate(dict_get_bytes, seconds),
            "dict decoded": _rate(dict_decoded, seconds),
            "shm get bytes": _rate(shm_bytes, seconds),
            "shm get decoded": _rate(shm_decoded, seconds),
            "shm get_many bytes": _rate(shm_many_bytes, seconds),
            "shm get_many decoded": _rate(shm_many_decoded, seconds),
            "dict[k] hot 1000 keys": _rate(dict_hot_bytes, seconds),
            "shm get hot 1000 keys": _rate(shm_hot_bytes, seconds),
        }
        print(f"\n== {n_keys:,} keys, {len(value)}-byte values, seed={seed} ==")
        print(
            f"publish {n_keys / publish_s:,.0f} keys/s; reader attach (scan) {attach_s:.3f} s CPU; "
            f"reader index heap {view_heap / n_keys:.0f} B/key"
        )
        for name, ops in r.items():
            print(f"  {name:22s} {ops:>13,.0f} /s")
        print(
            "  ratios: shm/dict bytes {:.2f}, shm/dict decoded {:.2f}, "
            "get_many/dict bytes {:.2f}".format(
                r["shm get bytes"] / r["dict[k] bytes"],
                r["shm get decoded"] / r["dict decoded"],
                r["shm get_many bytes"] / r["dict[k] bytes"],
            )
        )
        raw_per_key = raw_bytes / n_keys
        print(
            f"  shm bytes/key: segments {shm_total / n_keys:.1f}, records "
            f"{stats.used_bytes / n_keys:.1f}; raw key+value {raw_per_key:.1f} "
            f"(ratio {shm_total / raw_bytes:.2f} segments, "
            f"{stats.used_bytes / raw_bytes:.2f} records)"
        )
        # Compaction: the reader rebuilds from the directory (the pause a reader sees).
        for k in keys[: n_keys // 10]:  # 10% overwritten: something to compact away
            rev += 1
            rec = KeyRecord(k, value, 0, rev, rev, 2, 0)
            batch.append(Change(ChangeType.PUT, Space.USER, k, rec, rev, 0))
            if len(batch) == 1000:
                pub.publish(batch, rev, rev, 0)
                batch = []
        pub.publish(batch, rev, rev, 0)
        view.sync()
        t0 = time.process_time()
        pub.compact()
        compact_s = time.process_time() - t0
        t0 = time.process_time()
        w0 = time.perf_counter()
        view.sync()
        rebuild_s = time.process_time() - t0
        rebuild_wall_s = time.perf_counter() - w0
        assert view.directory_loads == 1 and get_encoded(keys[0]) == value
        stats = pub.stats()
        shm_total = ctl_size(DEFAULT_RING_CAPACITY) + stats.capacity_bytes
        print(
            f"  after compaction: writer compact {compact_s:.3f} s CPU, reader rebuild "
            f"(directory) {rebuild_s:.3f} s CPU ({rebuild_wall_s:.3f} s wall); "
            f"shm bytes/key: segments "
            f"{shm_total / n_keys:.1f} (ratio {shm_total / raw_bytes:.2f}), records+directory "
            f"{stats.used_bytes / n_keys:.1f}"
        )
        _incremental(pub, view, keys, value, rev, rng, budget_s)
        view.close()
        pub.close()
    finally:
        unlink_store(names)


def _incremental(
    pub: Publisher, view: ShmView, keys: list[str], value: bytes, rev: int,
    rng: random.Random, budget_s: float, batch_keys: int = 100,
) -> None:
    """
    The raft worker's way: begin, then one `compact_step(budget_s)` per loop turn, with a
    batch of `batch_keys` random overwrites published in every turn. Prints the longest
    single call (the raft worker's stall), the total CPU, and the reader's rebuild.
    """
    n_keys = len(keys)
    for k in keys[: n_keys // 10]:  # dead records again
        rev += 1
        pub.publish([Change(ChangeType.PUT, Space.USER, k, KeyRecord(k, value, 0, rev, rev, 3, 0),
                            rev, 0)], rev, rev, 0)
    pub.compact()  # start from a compacted arena: the 10% above are dead now
    for k in keys[: n_keys // 2]:  # a third of the arena dead
        rev += 1
        pub.publish([Change(ChangeType.PUT, Space.USER, k, KeyRecord(k, value, 0, rev, rev, 4, 0),
                            rev, 0)], rev, rev, 0)
    view.sync()
    loads = view.directory_loads
    # The raft worker's stall is its own thread's time (thread_time): the process's CPU
    # also counts the short-lived thread that closes the old mapping (Releaser).
    c0, w0 = time.thread_time(), time.perf_counter()
    pub.begin_compaction()
    longest_wall = time.perf_counter() - w0
    longest_cpu = time.thread_time() - c0
    begin_ms = longest_wall * 1000
    total_cpu = longest_cpu
    turns = 0
    cpus: list[float] = []
    started = time.perf_counter()
    while pub.compacting:
        batch = []
        rev += 1
        for k in rng.sample(keys, batch_keys):
            batch.append(Change(ChangeType.PUT, Space.USER, k,
                                KeyRecord(k, value, 0, rev, rev, 5, 0), rev, 0))
        pub.publish(batch, rev, rev, 0)
        c0, w0 = time.thread_time(), time.perf_counter()
        pub.compact_step(budget_s)
        wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
        longest_wall, longest_cpu = max(longest_wall, wall), max(longest_cpu, cpu)
        cpus.append(cpu)
        total_cpu += cpu
        turns += 1
    elapsed = time.perf_counter() - started
    head = view.current_status().ring_head
    c0, w0 = time.process_time(), time.perf_counter()
    view.sync()
    rebuild_cpu, rebuild_wall = time.process_time() - c0, time.perf_counter() - w0
    assert view.directory_loads == loads + 1 and view.get_encoded(keys[-1]) == value
    delta = head - read_gen_directory(view._mm)[1]
    print(
        f"  incremental compaction (budget {budget_s * 1000:.0f} ms, {batch_keys} puts "
        f"published per turn): begin {begin_ms:.1f} ms, {turns} turns in {elapsed:.2f} s, "
        f"longest call {longest_wall * 1000:.1f} ms wall / {longest_cpu * 1000:.1f} ms CPU "
        f"(next longest CPU: {', '.join(f'{c * 1000:.1f}' for c in sorted(cpus)[-4:-1])} ms), "
        f"total compaction {total_cpu:.3f} s CPU (raft worker thread); reader rebuild "
        f"(directory + {delta} changed keys) {rebuild_cpu:.3f} s CPU ({rebuild_wall:.3f} s "
        f"wall)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget-ms", type=float, default=5.0,
                    help="compact_step budget per raft-worker loop turn "
                         "(concord.node.raft_worker.SHM_COMPACT_STEP_S)")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]} pid={os.getpid()}")
    for n in args.keys:
        bench(n, args.value_bytes, args.seconds, args.seed, args.budget_ms / 1000)


if __name__ == "__main__":
    main()
