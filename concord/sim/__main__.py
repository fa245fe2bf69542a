"""
Run the deterministic simulator from the command line.

    python -m concord.sim --seeds 10000 --nodes 5 [--start-seed S] [--workers 2]
                          [--duration-ms 3000] [--no-buggify]
    python -m concord.sim --seed S --nodes N --trace     # replay one seed, print its trace

Prints one line per failing seed (`seed=... nodes=... buggify=on` and its exact replay
command) and a summary; exits 1 if any seed violated a check, 0 otherwise.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Iterator, Sequence

from concord.sim.auth import KvAuthAdapter
from concord.sim.cluster import DEFAULT_DURATION_MS, SimConfig, SimResult, Simulation

__all__ = ["main", "run_one", "run_many"]


def run_one(args: tuple[int, int, int, bool, bool]) -> tuple[int, int, list[str], str, int, float]:
    """Run one seed (a picklable entry point for worker processes)."""
    seed, nodes, duration_ms, buggify, auth = args
    started = time.process_time()
    try:
        result = Simulation(
            SimConfig(seed=seed, nodes=nodes, duration_ms=duration_ms, buggify=buggify),
            adapter=KvAuthAdapter() if auth else None,
        ).run()
        problems = [v.describe() for v in result.violations]
        digest, ops = result.digest, result.ops
    except Exception as exc:  # noqa: BLE001 - a crash of any layer is a failed seed
        problems = [f"exception: {type(exc).__name__}: {exc}"]
        digest, ops = "", 0
    return seed, nodes, problems, digest, ops, time.process_time() - started


def run_many(
    seeds: Sequence[int], nodes: int, duration_ms: int, buggify: bool, workers: int,
    auth: bool = False,
) -> Iterator[tuple[int, int, list[str], str, int, float]]:
    """Run seeds, in `workers` processes when more than one; yields results in order."""
    jobs = [(s, nodes, duration_ms, buggify, auth) for s in seeds]
    if workers <= 1:
        for job in jobs:
            yield run_one(job)
        return
    # NB: fork is explicit (docs/contributing.md "Processes"): the simulator has no threads and no zmq context.
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(run_one, jobs, chunksize=4)


def replay_command(seed: int, nodes: int, duration_ms: int, buggify: bool, auth: bool = False) -> str:
    cmd = f"python -m concord.sim --seed {seed} --nodes {nodes} --trace"
    if auth:
        cmd += " --auth"
    if duration_ms != DEFAULT_DURATION_MS:
        cmd += f" --duration-ms {duration_ms}"
    if not buggify:
        cmd += " --no-buggify"
    return cmd


def _print_trace(result: SimResult) -> None:
    for line in result.trace_lines:
        print(line)
    if result.linearizability is not None:
        print(result.linearizability.describe())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m concord.sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, help="replay this one seed")
    parser.add_argument("--seeds", type=int, default=100, help="number of seeds to run")
    parser.add_argument("--start-seed", type=int, default=0)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration-ms", "--duration", type=int, default=DEFAULT_DURATION_MS,
                        help="virtual milliseconds of chaos per seed")
    parser.add_argument("--no-buggify", action="store_true")
    parser.add_argument("--trace", action="store_true", help="print the replayed trace")
    parser.add_argument("--auth", action="store_true",
                        help="auth on: tokens on every write, a revocation program (concord/sim/auth.py)")
    parser.add_argument("--max-failures", type=int, default=0,
                        help="stop after this many failing seeds (0: run them all)")
    args = parser.parse_args(argv)
    buggify = not args.no_buggify
    flag = "on" if buggify else "off"

    if args.seed is not None:
        result = Simulation(
            SimConfig(seed=args.seed, nodes=args.nodes, duration_ms=args.duration_ms,
                      buggify=buggify, trace=args.trace),
            adapter=KvAuthAdapter() if args.auth else None,
        ).run()
        if args.trace:
            _print_trace(result)
        print(f"seed={args.seed} nodes={args.nodes} buggify={flag} ops={result.ops} "
              f"events={result.events} digest={result.digest} "
              f"{'ok' if result.ok else 'FAILED'}")
        for violation in result.violations:
            print(f"  {violation.describe()}")
        return 0 if result.ok else 1

    seeds = range(args.start_seed, args.start_seed + args.seeds)
    started = time.monotonic()
    failures = 0
    cpu = 0.0
    ops = 0
    ran = 0
    for seed, nodes, problems, _digest, n_ops, cpu_s in run_many(
        seeds, args.nodes, args.duration_ms, buggify, args.workers, args.auth
    ):
        ran += 1
        cpu += cpu_s
        ops += n_ops
        if problems:
            failures += 1
            print(f"seed={seed} nodes={nodes} buggify={flag} FAILED: {problems[0]}")
            print(f"  replay: {replay_command(seed, nodes, args.duration_ms, buggify, args.auth)}")
            sys.stdout.flush()
            if args.max_failures and failures >= args.max_failures:
                break
    wall = time.monotonic() - started
    print(f"seeds={ran} nodes={args.nodes} buggify={flag} failures={failures} "
          f"ops={ops} wall_s={wall:.1f} cpu_s={cpu:.1f} "
          f"cpu_per_seed_s={cpu / max(1, ran):.3f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
