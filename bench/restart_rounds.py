"""
Whole-cluster crash rounds (issue 12): `python -m bench.restart_rounds [--rounds 50]`.

Three nodes and four writer threads (one `put` of a new key at a time each); every round
waits until every node wrote a new snapshot (the first round kills before any), SIGKILLs
every process of every node at once, restarts all three, and waits for a leader, for a
write acknowledged after the kill, and reads every acknowledged key back with a strong
`get_many` at the leader. Prints one line per round, then the lost acknowledged writes,
the rounds without a leader, and the recovery time (kill -> first acknowledged write)
p50/p99. Exit status 1 if any round lost a write, found no leader or wrote a snapshot
without a membership.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from concord.chaos.restarts import RestartRounds, RoundResult


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restart_rounds", description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--snapshot-entries", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=None, help="keep the cluster here (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="concord-restart-rounds-") as scratch:
        folder = args.dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        rounds = RestartRounds(folder, nodes=3, writers=args.writers,
                               snapshot_entries=args.snapshot_entries)
        results: list[RoundResult] = []
        started = time.monotonic()
        try:
            rounds.start()
            for number in range(1, args.rounds + 1):
                result = rounds.run_round(number, snapshot=number > 1)
                results.append(result)
                recovery = "-" if result.recovery_s is None else f"{result.recovery_s:.2f}s"
                elected = "-" if result.leader_s is None else f"{result.leader_s:.2f}s"
                print(f"round={number} snapshot={result.snapshot} acked={result.acked} "
                      f"lost={len(result.lost)} leader={result.leader} recovery={recovery} "
                      f"ready={result.ready_s:.2f}s leader_seen={elected} "
                      f"no_membership={len(result.no_membership)}", flush=True)
                if result.leader is None:
                    break  # nothing more to learn from a cluster that does not recover
        finally:
            pids, segments = rounds.close()
        times = [r.recovery_s for r in results if r.recovery_s is not None]
        lost = sum(len(r.lost) for r in results)
        leaderless = sum(1 for r in results if r.leader is None)
        print(f"rounds={len(results)} acked={results[-1].acked if results else 0} lost={lost} "
              f"rounds_without_leader={leaderless} "
              f"snapshots_without_membership={sum(len(r.no_membership) for r in results)} "
              f"duration_s={time.monotonic() - started:.0f}")
        if times:
            print(f"recovery_s p50={statistics.median(times):.2f} p99={_percentile(times, 99):.2f} "
                  f"max={max(times):.2f} (kill -> first acknowledged write)")
            ready = [r.ready_s for r in results]
            seen = [r.leader_s for r in results if r.leader_s is not None]
            print(f"ready_s p50={statistics.median(ready):.2f} p99={_percentile(ready, 99):.2f} "
                  f"(kill -> every ready line); leader_seen_s p50={statistics.median(seen):.2f} "
                  f"p99={_percentile(seen, 99):.2f} (kill -> a leader all agree on, polled)")
        if pids or segments:
            print(f"leftovers pids={pids} segments={segments}", file=sys.stderr)
        return 0 if results and all(r.ok for r in results) and not (pids or segments) else 1


if __name__ == "__main__":
    sys.exit(main())
