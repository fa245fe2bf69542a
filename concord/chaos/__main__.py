"""
`python -m concord.chaos [--nodes 5] [--duration 60] [--seed S] [--faults a,b] [--unsafe-leader-reads]`

Starts a local cluster of real node processes (loopback, a temporary folder), runs
clients and nemeses against it, prints one line per action, then the report. Exit
status: 0 no violation, 1 a violation or an error (the report names the seed and the
replay command), 2 bad arguments. SIGINT (Ctrl-C) stops the run at once: every process
is ended and the report covers what ran; a second SIGINT is not needed and is ignored.
See docs/chaos.md.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from concord.chaos.run import ALL_FAULTS, ChaosOptions, run_chaos


def _faults(text: str) -> tuple[str, ...]:
    chosen = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in chosen if f not in ALL_FAULTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault kind(s) {unknown}; known: {','.join(ALL_FAULTS)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m concord.chaos",
                                     description="Chaos run against a local Concord cluster.")
    parser.add_argument("--nodes", type=int, default=5, help="cluster size (default 5)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of chaos (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="seed of every choice (default: random)")
    parser.add_argument("--faults", type=_faults, default=ALL_FAULTS,
                        help=f"comma-separated subset of {','.join(ALL_FAULTS)} (default: all)")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None,
                        help="work folder (default: a temporary one, removed after a passing run)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder after a pass")
    parser.add_argument("--unsafe-leader-reads", action="store_true",
                        help="self-test: nodes serve leader reads without the leader check "
                             "(faults.unsafe_leader_reads); the run must find a violation")
    parser.add_argument("--lockers", type=int, default=2,
                        help="lock-holder processes of the lock recipe (default 2)")
    parser.add_argument("--incrementers", type=int, default=2,
                        help="threads incrementing the counter (default 2)")
    parser.add_argument("--unsafe-lock", action="store_true",
                        help="self-test: the lock holders take the lock with a plain put; "
                             "the run must find two holders at once")
    parser.add_argument("--auth", action="store_true",
                        help="nodes with [auth] enabled: the run writes a bootstrap admin token "
                             "(<dir>/admin.token, its bootstrap_token_file) and every request "
                             "of the run carries it (lock holders: CONCORD_TOKEN)")
    parser.add_argument("--quiet", action="store_true", help="no per-action lines")
    args = parser.parse_args(argv)
    if (args.nodes < 1 or args.duration <= 0 or min(args.writers, args.readers, args.lockers,
                                                      args.incrementers) < 0):
        parser.error("--nodes must be >= 1, --duration > 0, --writers/--readers/--lockers/"
                     "--incrementers >= 0")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    if args.dir is not None:
        if (args.dir / "data").exists():
            parser.error(f"--dir {args.dir} holds the data of an earlier run; give an empty folder")
        args.dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stdout,
                        format="%(asctime)s.%(msecs)03d %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("concord.storage").setLevel(logging.WARNING)
    options = ChaosOptions(nodes=args.nodes, duration_s=args.duration, seed=seed,
                           faults=args.faults, writers=args.writers, readers=args.readers,
                           unsafe_leader_reads=args.unsafe_leader_reads,
                           lockers=args.lockers, incrementers=args.incrementers,
                           unsafe_lock=args.unsafe_lock, auth=args.auth,
                           workdir=args.dir.resolve() if args.dir is not None else None,
                           keep=args.keep)
    print(f"chaos: seed={seed} replay: {options.replay_command()}", flush=True)
    stop = threading.Event()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            print("chaos: SIGINT: stopping (ending every process, then the report)", flush=True)
        stop.set()

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)
    report = run_chaos(options, stop)
    print(report.render(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
