"""
Throughput of KvStateMachine.apply() for small puts (the write hot path).

    PYTHONPATH=. python bench/kv_apply.py [--n 100000] [--keys 10000] [--ttl] [--rounds 3]

Commands are encoded up front (as the leader does once per write); the timed loop is
apply() alone. Each figure is the best of --rounds runs on a fresh state machine, in
process CPU time, so that other processes on a shared machine disturb it less; the
load average is printed alongside.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from concord.kv import KvStateMachine, encode_command


def best_cpu_s(rounds: int, run: Callable[[], None]) -> float:
    """The least process CPU time of `rounds` calls of `run`."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        run()
        best = min(best, time.process_time() - t0)
    return best


def _timed(call: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description="kv apply() throughput for small puts")
    parser.add_argument("--n", type=int, default=100_000, help="puts to apply")
    parser.add_argument("--keys", type=int, default=10_000, help="distinct keys")
    parser.add_argument("--ttl", action="store_true", help="give every put a TTL")
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure (best kept)")
    args = parser.parse_args()
    n = args.n
    print(f"n={n} keys={args.keys} ttl={args.ttl} rounds={args.rounds} "
          f"loadavg={os.getloadavg()[0]:.2f} cpus={os.cpu_count()}")

    def make(i: int) -> bytes:
        value = {"n": i, "name": "x" * 20}
        extra = {"ttl": 60} if args.ttl else {}
        return encode_command("put", {"key": f"user:{i % args.keys:08d}", "value": value, **extra})

    commands: list[bytes] = []
    encode_s = best_cpu_s(1, lambda: commands.extend(make(i) for i in range(n)))

    final: list[KvStateMachine] = []
    for label, with_index in (("plain", False), ("with 1 index", True)):

        def run() -> None:
            sm = KvStateMachine()
            index = 1
            if with_index:
                sm.apply(index, 0, encode_command("create_index", {"name": "n", "field": "n"}))
                index += 1
            for i, data in enumerate(commands):
                sm.apply(index + i, 1_000 + i, data)
            final[:] = [sm]

        apply_s = best_cpu_s(args.rounds, run)
        print(f"apply {label}: {n / apply_s:,.0f} ops/s ({apply_s / n * 1e6:.2f} us/op)")
    print(f"encode_command put: {n / encode_s:,.0f} ops/s ({encode_s / n * 1e6:.2f} us/op)")
    sm = final[0]
    hash_s = min(_timed(sm.state_hash) for _ in range(5))
    print(f"state_hash: {hash_s * 1e6:.1f} us (0x{sm.state_hash():016x})")
    t0 = time.process_time()
    snap = sm.snapshot()
    snap_s = time.process_time() - t0
    t0 = time.process_time()
    KvStateMachine().restore(snap)
    print(f"snapshot of {len(sm)} keys: {len(snap):,} bytes in {snap_s * 1e3:.1f} ms, "
          f"restore (incl. index rebuild) {(time.process_time() - t0) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
