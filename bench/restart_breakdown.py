"""
Where a whole-cluster restart spends its time (issue 15): `python -m bench.restart_breakdown`.

Starts a 3-member Concord cluster with the bench settings (bench.systems.Concord, INFO
logs), loads `--keys` keys, SIGTERMs every member, starts them again and prints, in
milliseconds after the launch of the first member: each member's ready line, the
first leader seen by `status`, the first strong read of the last key that succeeds (what
bench.scenarios.restart_and_memory times), and the start-up lines of the members' logs
(the child processes starting, recovery, elections), each with its member, up to each
member's "start-up state published" line (its restore, replay and shm image times and
its raft worker's CPU; logged once its image is built, which may be after the first
served read: waited for, not part of the time measured). As the scenario does, the
restart follows the load once the leader's snapshot child (if any) has ended.

`--old <checkout>` restarts the same data in turn from another checkout's code and this
one's (`--rounds` times each), to compare old and new code in alternation; the keys are
loaded once. `--storage KEY=VALUE` (repeatable) sets a [storage] option of the members,
e.g. `--storage snapshot_bytes=16777216` to see what the snapshot schedule costs the
load and leaves the restart to replay.
"""

from __future__ import annotations

import argparse
import datetime
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil

from bench.drivers import key_name
from bench import systems
from bench.procs import Procs, wait_for
from bench.scenarios import _tree_size
from bench.stages import role_cpu, role_processes
from bench.systems import Concord

# The log lines worth a timestamp on the way up (node log format: concord/supervisor.py).
MILESTONES = re.compile(
    r"recover|restor|replay|snapshot|ready|started|starting election|became|leader|"
    r"elected|campaign|granted|listening|attached|published|hello", re.IGNORECASE)
PUBLISHED = "start-up state published"
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (\S+) \[(\S+) (\d+)\] (.*)$")


def _log_events(path: Path, since_wall: float) -> list[tuple[float, str]]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        m = LOG_TIME.match(line)
        if not m:
            continue
        wall = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if wall < since_wall - 0.002 or not MILESTONES.search(m.group(6)):
            continue
        events.append((wall, f"{m.group(4)} pid={m.group(5)} {m.group(3)}: {m.group(6)[:240]}"))
    return events


def members_cpu_s(s: Concord) -> float:
    """CPU seconds of the members' processes so far, with their reaped children's (snapshots)."""
    total = 0.0
    for _, pid in role_processes(s, -1):
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def restart_once(s: Concord, last: str, root: Path | None, show_log: bool) -> dict[str, float]:
    """SIGTERM every member, start them again (from `root`, or bench.systems.ROOT)."""
    s.stop()
    for f in s.workdir.glob("*.log"):
        f.write_text("")
    if root is not None:
        systems.ROOT = root
    start_wall = time.time()
    t0 = time.perf_counter()
    for m in s.members:
        s.launch(m)
    marks: dict[str, float] = {}
    for m in s.members:
        s.wait_ready(m, 900.0)
        marks[f"ready {m.id}"] = time.perf_counter() - t0
    wait_for(lambda: s._leader_or_none() is not None, 900.0, "leader")
    marks["leader seen"] = time.perf_counter() - t0
    wait_for(lambda: s.read_probe(last), 900.0, "strong read of the last key")
    marks["served (probe ok)"] = time.perf_counter() - t0
    # CPU seconds of the members' processes since the launch, by role, summed over the
    # members: what the restart cost, whatever the host's load did to the wall times.
    cpu: dict[str, float] = defaultdict(float)
    for key, seconds in role_cpu(s, -1).items():
        cpu[key.partition("/")[2]] += seconds
    marks["cpu_s"] = sum(cpu.values())
    if show_log:
        # Each member's split (restore, replay, image; its raft worker's CPU) is in its
        # "start-up state published" line, logged once its shm image is built: that may
        # come after the first served read, and is not part of the time measured.
        logs = sorted(s.workdir.glob("*.log"))
        wait_for(lambda: all(PUBLISHED in f.read_text(errors="replace") for f in logs), 300.0,
                 "every member's start-up state published")
        events = []
        for f in logs:
            events += _log_events(f, start_wall)
        for wall, text in sorted(events):
            print(f"{(wall - start_wall) * 1000:8.0f} ms  {text}")
        for name, at in marks.items():
            if name != "cpu_s":
                print(f"{at * 1000:8.0f} ms  ** {name}")
        print("CPU s of the 3 members at served: " + ", ".join(
            f"{role} {seconds:.1f}" for role, seconds in sorted(cpu.items()))
            + f", total {marks['cpu_s']:.1f}", flush=True)
    return marks


def breakdown(keys: int, workdir: Path, roots: list[Path | None], rounds: int,
              storage: dict[str, object]) -> None:
    """Load once; then `rounds` restarts from each root in turn (alternating)."""
    with Procs() as procs:
        s = Concord(procs, workdir)
        s.settings = {**s.settings, "logging": {"level": "INFO"},
                      "storage": {**s.settings["storage"], **storage}}
        s.start()
        processes = _tree_size(s, s.leader_index())
        cpu0 = members_cpu_s(s)
        t0 = time.perf_counter()
        s.load_keys(keys)
        print(f"loaded {keys} keys in {time.perf_counter() - t0:.1f} s, CPU of the members "
              f"{members_cpu_s(s) - cpu0:.1f} s (snapshot children included)", flush=True)
        time.sleep(1.0)  # as restart_and_memory: followers finish applying
        li = s.leader_index()  # and, as it does, the leader's snapshot child ends first
        wait_for(lambda: _tree_size(s, li) <= processes, 300.0, "the leader's snapshot child to end")
        last = key_name(keys - 1)
        served: dict[str, list[float]] = {}
        cpu_s: dict[str, list[float]] = {}
        for r in range(rounds):
            for root in roots:
                name = str(root or systems.ROOT)
                print(f"-- round {r + 1}, nodes from {name}", flush=True)
                marks = restart_once(s, last, root, show_log=True)
                served.setdefault(name, []).append(marks["served (probe ok)"])
                cpu_s.setdefault(name, []).append(marks["cpu_s"])
        s.stop()
        for name, times in served.items():
            print(f"restart -> served, {name}: {', '.join(f'{t:.2f}' for t in times)} s; "
                  f"CPU of the members: {', '.join(f'{c:.1f}' for c in cpu_s[name])} s")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.restart_breakdown", description=__doc__)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--old", type=Path, default=None,
                        help="another checkout: its nodes restart in turn with this one's")
    parser.add_argument("--storage", action="append", default=[], metavar="KEY=VALUE",
                        help="a [storage] option of the members (an integer value), repeatable")
    args = parser.parse_args()
    storage: dict[str, object] = {}
    for item in args.storage:
        key, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            parser.error(f"--storage {item!r}: expected KEY=INTEGER")
        storage[key] = int(value)
    roots: list[Path | None] = [args.old, systems.ROOT] if args.old else [None]
    with tempfile.TemporaryDirectory(prefix="concord-restart-bd-") as tmp:
        breakdown(args.keys, Path(tmp), roots, args.rounds, storage)


if __name__ == "__main__":
    main()
