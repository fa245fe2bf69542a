"""
Throughput of KvStateMachine.apply() for small puts (the write hot path).

    PYTHONPATH=. python bench/kv_apply.py [--n 200000] [--keys 10000] [--ttl]

Commands are encoded up front (as the leader does once per write); the timed loop is
apply() alone, then encode alone, then a mixed workload with a secondary index.
"""

from __future__ import annotations

import argparse
import time

from concord.kv import KvStateMachine, encode_command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--n", type=int, default=200_000, help="puts to apply")
    parser.add_argument("--keys", type=int, default=10_000, help="distinct keys")
    parser.add_argument("--ttl", action="store_true", help="give every put a TTL")
    args = parser.parse_args()

    t0 = time.perf_counter()
    commands = [
        encode_command(
            "put",
            {"key": f"user:{i % args.keys:08d}", "value": {"n": i, "name": "x" * 20},
             **({"ttl": 60} if args.ttl else {})},
        )
        for i in range(args.n)
    ]
    encode_s = time.perf_counter() - t0

    for label, with_index in (("plain", False), ("with 1 index", True)):
        sm = KvStateMachine()
        index = 1
        if with_index:
            sm.apply(index, 0, encode_command("create_index", {"name": "n", "field": "n"}))
            index += 1
        t0 = time.perf_counter()
        for i, data in enumerate(commands):
            sm.apply(index + i, 1_000 + i, data)
        apply_s = time.perf_counter() - t0
        print(
            f"apply {label}: n={args.n} keys={args.keys} ttl={args.ttl} "
            f"{args.n / apply_s:,.0f} ops/s ({apply_s / args.n * 1e6:.2f} us/op)"
        )
    print(f"encode: {args.n / encode_s:,.0f} ops/s ({encode_s / args.n * 1e6:.2f} us/op)")
    t0 = time.perf_counter()
    h = sm.state_hash()
    print(f"state_hash: {(time.perf_counter() - t0) * 1e6:.1f} us (0x{h:016x})")
    t0 = time.perf_counter()
    snap = sm.snapshot()
    snap_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    KvStateMachine().restore(snap)
    print(
        f"snapshot: {len(snap):,} bytes in {snap_s * 1e3:.1f} ms, "
        f"restore {(time.perf_counter() - t0) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
