"""
Memory per key of the leader member, broken down by process (and shm segment).

    PYTHONPATH=$PWD python3 -m bench.memory_breakdown --keys 100000 --systems concord,etcd

Starts each system as bench/systems.py does (3 members on 127.0.0.1), measures the USS of
every process of the leader member's tree and the size of its /dev/shm segments, loads
`--keys` keys of 100-byte values (bench/systems.py `load_keys`), waits `--settle-s`, and
measures again (with `--read`, after one eventual read per member, so that the read
workers have built their shm views). Prints before/after/bytes per key for each process and the total, which is
the figure of the restart scenario (bench/scenarios.py `restart_and_memory`).

A Concord node's children are forked (same command line), so their roles are named in the
order the supervisor starts them (concord/supervisor.py: writer, raft, reader0..,
door).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import psutil

from bench.procs import Procs, install_signal_handlers
from bench.systems import Concord, Etcd, System, private_bytes

CONCORD_ROLES = ("writer", "raft", "reader0", "door")


def process_uss(s: System, index: int) -> dict[str, int]:
    """USS (without /dev/shm pages) of each process of member `index`'s tree, by role or pid."""
    pid = s.members[index].pid
    assert pid is not None
    root = psutil.Process(pid)
    kids = sorted(root.children(recursive=True), key=lambda p: (p.create_time(), p.pid))
    out = {"supervisor" if s.name == "concord" else s.name: private_bytes(root)}
    for i, p in enumerate(kids):
        name = CONCORD_ROLES[i] if s.name == "concord" and i < len(CONCORD_ROLES) else f"pid{p.pid}"
        out[name] = private_bytes(p)
    if isinstance(s, Concord):
        out.update(shm_sizes(s, index))
    return out


def shm_sizes(s: Concord, index: int) -> dict[str, int]:
    """Allocated bytes of each /dev/shm segment of the member, by the segment's name tail."""
    m = s.members[index]
    safe = "".join(c if c.isalnum() or c in "_." else "_" for c in m.id)[:32]
    prefix = f"concord-{safe}-{m.pid}x"
    out: dict[str, int] = {}
    for name in sorted(os.listdir("/dev/shm")):
        if name.startswith(prefix):
            out["shm:" + name[len(prefix):]] = os.stat(f"/dev/shm/{name}").st_blocks * 512
    return out


def read_once(s: System, key: str) -> None:
    """One eventual read from every member (so read workers build their shm views)."""
    from concord.client import Client
    for m in s.members:
        with Client([m.endpoint], timeout_s=5, shm=False) as c:
            c.get(key, consistency="eventual", default=None)


def measure(s: System, keys: int, settle_s: float, read: bool) -> None:
    li = s.leader_index()
    before = process_uss(s, li)
    t0 = time.perf_counter()
    s.load_keys(keys)
    load_s = time.perf_counter() - t0
    time.sleep(settle_s)
    if read and isinstance(s, Concord):
        from bench.drivers import key_name
        read_once(s, key_name(keys - 1))
    li2 = s.leader_index()
    after = process_uss(s, li2)
    print(f"{s.name}: {keys} keys loaded in {load_s:.1f} s (leader {s.members[li2].id})")
    print(f"  {'process':<22}{'before MB':>11}{'after MB':>11}{'B/key':>9}")
    total = 0
    for name in list(dict.fromkeys([*before, *after])):
        b, a = before.get(name, 0), after.get(name, 0)
        total += a - b
        print(f"  {name:<22}{b / 1e6:>11.1f}{a / 1e6:>11.1f}{(a - b) / keys:>9.0f}")
    print(f"  {'total':<22}{'':>22}{total / keys:>9.0f}", flush=True)
    snaps = sorted((s.members[li2].data_dir / "snap").glob("*")) if isinstance(s, Concord) else []
    if snaps:  # the raft worker holds the newest snapshot's body in memory (to send it)
        print(f"  newest snapshot file: {snaps[-1].stat().st_size / 1e6:.1f} MB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1] if __doc__ else None)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--systems", default="concord,etcd")
    ap.add_argument("--settle-s", type=float, default=2.0)
    ap.add_argument("--read", action="store_true",
                    help="Concord: one eventual read per member before measuring (views built)")
    args = ap.parse_args()
    install_signal_handlers()
    kinds = {"concord": Concord, "etcd": Etcd}
    with tempfile.TemporaryDirectory(prefix="concord-memory-bench-") as tmp, Procs() as procs:
        for name in args.systems.split(","):
            s = kinds[name](procs, Path(tmp))
            s.start()
            try:
                measure(s, args.keys, args.settle_s, args.read)
            finally:
                s.stop()


if __name__ == "__main__":
    main()
