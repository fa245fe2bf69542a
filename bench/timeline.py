"""
The timeline of one put and one strong read across a 3-node cluster's processes.

    python -m bench.timeline [--ops 300] [--idle-seconds 3] [--keys 1000] [--show 1]

Starts a 3-node Concord cluster with the benchmark's settings (bench/systems.py: fsync
on, tick = heartbeat 50 ms) whose processes import bench/timeline_hook/sitecustomize.py:
every door, raft worker and log writer then logs a monotonic timestamp (CLOCK_MONOTONIC,
one clock for every process) at each stage of a request: the door's client receive and
backend hand-off, the raft worker's request, APPEND/PERSIST sends, the writer's batch and
fdatasync, PERSISTED, APPEND_RESP, apply, shm publish, reply, and every poll wake-up and
tick. Then, with one `concord.client.Client` (shm off, the leader's endpoint first, as
the bench's 1-client latency probes), it sends `--ops` sequential puts and `--ops`
sequential strong gets and, for each stage, prints the median time since the client
sent the request (the first time the stage appears in the request's window), plus one
whole request's timeline. Before that it counts the marks of an idle interval: the idle
work per second (ticks, heartbeats, lease probes, wake-ups).

Each mark costs one os.write (a few µs), so the totals are a little higher than the
bench's; the stage gaps are what to read. Nothing of this is in the product's code: the
hook wraps methods only in processes that have the hook's folder on their path.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import psutil

from bench.drivers import key_name, value_for
from bench.procs import Procs
from bench.systems import ROOT, Concord, Member, python_env

HOOK = Path(__file__).resolve().parent / "timeline_hook"

Mark = tuple[int, str, str, str]  # (monotonic ns, process label, stage, detail)


class TimelineConcord(Concord):
    """Concord whose server processes load the timeline hook."""

    def __init__(self, procs: Procs, workdir: Path, marks: Path) -> None:
        super().__init__(procs, workdir)
        self.marks = marks

    def launch(self, m: Member) -> None:
        env = python_env(ROOT, self.workdir)
        env["PYTHONPATH"] = f"{HOOK}{os.pathsep}{env['PYTHONPATH']}"
        env["CONCORD_TIMELINE_DIR"] = str(self.marks)
        import sys
        p = self.procs.start([sys.executable, "-m", "concord.supervisor", "--config",
                              str(self.workdir / f"{m.id}.toml")],
                             self.workdir / f"{m.id}.log", cwd=ROOT, env=env, stdout_pipe=True)
        m.pid = p.pid
        m.extra["launched_at"] = repr(time.monotonic())


def labels(system: Concord, leader: int) -> dict[int, str]:
    """pid -> "L/raft", "F1/writer", ...: leader L, followers F1 and F2."""
    out: dict[int, str] = {}
    followers = 0
    for i, m in enumerate(system.members):
        if m.pid is None:
            continue
        if i == leader:
            side = "L"
        else:
            followers += 1
            side = f"F{followers}"
        for pid in system.procs.pids_of(m.pid):
            try:
                name = "supervisor" if pid == m.pid else psutil.Process(pid).name()
            except psutil.NoSuchProcess:
                continue
            out[pid] = f"{side}/{name}"
    return out


def read_marks(folder: Path, names: dict[int, str]) -> list[Mark]:
    marks: list[Mark] = []
    for f in folder.glob("*.tl"):
        label = names.get(int(f.stem), f"?{f.stem}")
        for line in f.read_text().splitlines():
            ns, stage, *rest = line.split(" ", 2)
            marks.append((int(ns), label, stage, rest[0] if rest else ""))
    marks.sort()
    return marks


def window(marks: list[Mark], t0: int, t1: int) -> list[Mark]:
    import bisect
    lo = bisect.bisect_left(marks, (t0,))
    hi = bisect.bisect_right(marks, (t1, "\uffff"))
    return marks[lo:hi]


def stage_table(marks: list[Mark], spans: list[tuple[int, int]]) -> list[tuple[str, float, float, int]]:
    """(label/stage, median µs since send, median µs since the previous row, count)."""
    firsts: dict[str, list[float]] = defaultdict(list)
    for t0, t1 in spans:
        seen: set[str] = set()
        for ns, label, stage, _ in window(marks, t0, t1):
            key = f"{label} {stage}"
            if key in seen:
                continue
            seen.add(key)
            firsts[key].append((ns - t0) / 1000)
        firsts["client reply"].append((t1 - t0) / 1000)
    rows = [(k, statistics.median(v), len(v)) for k, v in firsts.items() if len(v) >= len(spans) // 2]
    rows.sort(key=lambda r: r[1])
    out = []
    prev = 0.0
    for k, med, n in rows:
        out.append((k, med, med - prev, n))
        prev = med
    return out


def own_fsync_wait(marks: list[Mark], spans: list[tuple[int, int]]) -> tuple[int, float, int]:
    """
    Raft thesis §10.2.1: how often the leader's commit waited for its own fdatasync. For
    each put: the leader's PERSISTED against the first APPEND_RESP it received (2 of 3
    members persisted either way). Returns (puts where its own PERSISTED came last, the
    median µs it came after that APPEND_RESP, puts with both marks).
    """
    waits: list[float] = []
    both = 0
    for t0, t1 in spans:
        persisted = resp = None
        for ns, label, stage, _ in window(marks, t0, t1):
            if label == "L/raft" and stage == "raft.persisted" and persisted is None:
                persisted = ns
            elif label == "L/raft" and stage == "raft.recv.APPEND_RESP" and resp is None:
                resp = ns
        if persisted is None or resp is None:
            continue
        both += 1
        if persisted > resp:
            waits.append((persisted - resp) / 1000)
    return len(waits), statistics.median(waits) if waits else 0.0, both


def print_request(marks: list[Mark], t0: int, t1: int) -> None:
    for ns, label, stage, detail in window(marks, t0, t1):
        print(f"  {(ns - t0) / 1000:8.0f} µs  {label:<12} {stage} {detail}")
    print(f"  {(t1 - t0) / 1000:8.0f} µs  client       reply")


def probe(system: Concord, op: str, n: int, keys: int) -> tuple[list[tuple[int, int]], list[float]]:
    from concord.client import Client
    spans: list[tuple[int, int]] = []
    with Client(list(system.endpoints_leader_first()), shm=False, timeout_s=10) as c:
        for i in range(n):
            t0 = time.monotonic_ns()
            if op == "put":
                c.put(key_name(i % keys), value_for(i))
            else:
                c.get(key_name(i % keys), consistency="strong")
            spans.append((t0, time.monotonic_ns()))
    lat = sorted((t1 - t0) / 1e6 for t0, t1 in spans)
    return spans, lat


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.timeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=300)
    ap.add_argument("--idle-seconds", type=float, default=3.0)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--show", type=int, default=1, help="whole timelines printed per op (the median one first)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="concord-timeline-") as tmp, Procs() as procs:
        marks_dir = Path(tmp) / "marks"
        marks_dir.mkdir()
        system = TimelineConcord(procs, Path(tmp), marks_dir)
        system.start()
        try:
            system.load_keys(args.keys)
            leader = system.leader_index()
            names = labels(system, leader)
            idle0 = time.monotonic_ns()
            time.sleep(args.idle_seconds)
            idle1 = time.monotonic_ns()
            results = {op: probe(system, op, args.ops, args.keys) for op in ("put", "strong")}
            names = labels(system, leader) | names
            marks = read_marks(marks_dir, names)
        finally:
            system.wipe()
    secs = (idle1 - idle0) / 1e9
    counts = Counter(f"{label} {stage}" for _, label, stage, _ in window(marks, idle0, idle1))
    print(f"idle marks per second ({secs:.1f} s, no requests):")
    for key, n in sorted(counts.items()):
        print(f"  {n / secs:8.1f}  {key}")
    for op, (spans, lat) in results.items():
        print(f"\n{op}: {len(spans)} ops, p50 {pct(lat, 0.5):.3f} ms, p99 {pct(lat, 0.99):.3f} ms")
        print("  median µs since send | since previous row | requests | stage (first in each request)")
        for key, med, gap, n in stage_table(marks, spans):
            print(f"  {med:8.0f} {gap:8.0f} {n:6d}  {key}")
        if op == "put":
            n, med, both = own_fsync_wait(marks, spans)
            print(f"  the leader's own PERSISTED came after the first APPEND_RESP in {n} of {both} puts "
                  f"(median {med:.0f} µs later): what committing on the followers' quorum alone "
                  "(thesis §10.2.1) could save")
        by_len = sorted(spans, key=lambda s: s[1] - s[0])
        for t0, t1 in by_len[len(by_len) // 2: len(by_len) // 2 + args.show]:
            print(f"\n  one {op} (the median):")
            print_request(marks, t0, t1)


if __name__ == "__main__":
    main()
