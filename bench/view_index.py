"""
What a shared-memory view's key index costs: a same-host client's `ShmView` (dicts, small
values inline) against a node's `NodeView` (an `OffsetTable`, no values copied).

    PYTHONPATH=$PWD python bench/view_index.py [--keys 100000] [--gets 200000]

One process, CPU time (`time.process_time`): builds a store of `--keys` keys (100-byte
values) by a bulk reset, then for each kind of view: attaching it (a directory load),
the peak of its heap per key (tracemalloc), `--gets` random `get_encoded` lookups, and
ingesting one put of every key from the ring. docs/benchmarks.md "Memory per key".
"""

from __future__ import annotations

import argparse
import os
import random
import time
import tracemalloc

from concord.kv.record import Change, ChangeType, KeyRecord, Space
from concord.shm.layout import SegmentNames
from concord.shm.publisher import Publisher
from concord.shm.segments import create_store, unlink_store
from concord.shm.view import NodeView, ShmView

VALUE = b"\xc4\x61" + b"x" * 97  # 100 bytes of msgpack


def record(key: str, rev: int) -> KeyRecord:
    return KeyRecord(key, VALUE, 0, 1, rev, rev, 0)


def measure(names: SegmentNames, pub: Publisher, keys: list[str], gets: int, rev: int) -> int:
    """One line per kind of view; returns the revision it published up to."""
    sample = random.Random(1).choices(keys, k=gets)
    for kind in (ShmView, NodeView):
        pub.compact()  # a fresh directory: the attach loads it, with nothing to replay
        tracemalloc.start()  # (it slows allocations down: attach once more, timed)
        kind.attach(names).close()
        heap = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        t0 = time.process_time()
        view = kind.attach(names)
        attach_s = time.process_time() - t0
        loads = view.directory_loads
        get = view.get_encoded
        t0 = time.process_time()
        for key in sample:
            get(key)
        get_us = (time.process_time() - t0) / gets * 1e6
        before, ingest_s = view.applied_changes, 0.0
        for i in range(0, len(keys), 500):  # one put of every key, through the ring
            rev += 1
            pub.publish([Change(ChangeType.PUT, Space.USER, k, record(k, rev), rev, 0)
                         for k in keys[i:i + 500]], rev, rev, 0)
            if (i + 500) % 100_000 == 0 or i + 500 >= len(keys):  # within the ring
                t0 = time.process_time()
                view.sync()
                ingest_s += time.process_time() - t0
        ingested = view.applied_changes - before
        view.close()
        print(f"{kind.__name__:8} attach {attach_s:.2f} s ({loads} directory load), "
              f"peak heap {heap / len(keys):.0f} B/key, "
              f"get_encoded {get_us:.2f} µs, "
              f"ingest {ingest_s / max(1, ingested) * 1e6:.2f} µs/change ({ingested} changes)",
              flush=True)
    return rev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1] if __doc__ else None)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--gets", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    names = SegmentNames(f"vi{os.getpid()}", "s0")
    create_store(names, ring_capacity=1 << 18, initial_bytes=1 << 20)
    try:
        pub = Publisher.attach(names)
        keys = [f"key{i:08d}" for i in range(args.keys)]
        pub.reset([(Space.USER, (record(k, 1) for k in keys))], 1, 1, 0)
        rev = 1
        for _ in range(args.rounds):
            rev = measure(names, pub, keys, args.gets, rev)
        pub.close()
    finally:
        unlink_store(names)


if __name__ == "__main__":
    main()
