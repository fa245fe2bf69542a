"""
Memory per key and snapshot restore time of the kv state machine alone, in one process.

    PYTHONPATH=$PWD python3 -m bench.kv_restore [--keys 1000000] [--rounds 2]

Builds a KvStateMachine as `bench.memory_breakdown` loads a node (put_many entries of 500
keys, 100-byte values: bench/drivers.py `key_name`, `value_for`), printing its apply CPU
per key and its RSS growth per key, then writes its snapshot to a temporary file and, in
a fresh process per round (so that no freed memory of the build is reused), restores it
and prints the restore's CPU time and wall time and the restored machine's RSS growth
per key. CPU is process time, so that other processes on a shared machine disturb it
less; the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.drivers import key_name, value_for
from concord.kv import KvStateMachine, encode_command

BATCH = 500


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(keys: int) -> KvStateMachine:
    """A machine holding `keys` keys, applied as a node applies a bulk load."""
    commands = [
        encode_command("put_many", {"items": [[key_name(i), value_for(i)]
                                              for i in range(lo, min(keys, lo + BATCH))]})
        for lo in range(0, keys, BATCH)
    ]
    gc.collect()
    before = rss_bytes()
    t0 = time.process_time()
    sm = KvStateMachine()
    for i, data in enumerate(commands):
        sm.apply(i + 1, 1_000 + i, data)
    apply_s = time.process_time() - t0
    del commands
    gc.collect()
    print(f"applied: {apply_s / keys * 1e6:.2f} us/key of CPU, "
          f"RSS {(rss_bytes() - before) / keys:.0f} B/key (commands freed)", flush=True)
    return sm


def restore_once(path: Path, keys: int) -> None:
    """Restore the snapshot at `path` into a fresh machine and print time and memory."""
    data = path.read_bytes()
    gc.collect()
    before = rss_bytes()
    t0, w0 = time.process_time(), time.perf_counter()
    sm = KvStateMachine()
    sm.restore(data)
    cpu_s, wall_s = time.process_time() - t0, time.perf_counter() - w0
    del data
    gc.collect()
    print(f"restored {len(sm)} keys: {cpu_s:.2f} s CPU ({wall_s:.2f} s wall), "
          f"RSS {(rss_bytes() - before + path.stat().st_size) / keys:.0f} B/key", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1] if __doc__ else None)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2, help="restores, one fresh process each")
    ap.add_argument("--restore", type=Path, help=argparse.SUPPRESS)  # one round's child
    args = ap.parse_args()
    if args.restore is not None:
        restore_once(args.restore, args.keys)
        return
    print(f"keys={args.keys} loadavg={os.getloadavg()[0]:.2f} cpus={os.cpu_count()}", flush=True)
    sm = build(args.keys)
    t0 = time.process_time()
    snapshot = sm.snapshot()
    print(f"snapshot: {len(snapshot) / args.keys:.0f} B/key in "
          f"{time.process_time() - t0:.2f} s CPU", flush=True)
    del sm
    with tempfile.TemporaryDirectory(prefix="concord-kv-restore-") as tmp:
        path = Path(tmp) / "kv.snap"
        path.write_bytes(snapshot)
        del snapshot
        for _ in range(args.rounds):
            subprocess.run([sys.executable, "-m", "bench.kv_restore", "--keys", str(args.keys),
                            "--restore", str(path)], check=True)


if __name__ == "__main__":
    main()
