"""
The benchmark's command line: `python -m bench all | setup | run | report`.

    python -m bench all [--size full]      # setup, run every scenario on every system, report
    python -m bench setup
    python -m bench run --size short|full [--only SCENARIO[,..]] [--systems concord,etcd,...]
                        [--failovers N]
    python -m bench report [--size full]

`run` writes bench/out/results-<size>.json; `report` turns it into bench/RESULTS.md and
bench/*.png. Scenarios: write_latency, write_throughput, read_latency, read_throughput,
shm_reads, failover, restart (restart also measures memory per key).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys

from bench.scenarios import SCENARIOS, SIZES
from bench.systems import SYSTEMS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="install etcd, redis, pysyncobj, etcd3gw, matplotlib")
    r = sub.add_parser("run", help="measure")
    a = sub.add_parser("all", help="setup, run and report in one go (a fresh machine)")
    for p in (r, a):
        p.add_argument("--size", choices=sorted(SIZES), default="short" if p is r else "full")
        p.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
        p.add_argument("--systems", default="concord,etcd,pysyncobj,redis")
        p.add_argument("--failovers", type=int, default=None,
                       help="failovers per system (default: the size's, 1 short, 3 full)")
        p.add_argument("-v", "--verbose", action="store_true")
    rep = sub.add_parser("report", help="write bench/RESULTS.md and PNG plots from the JSON")
    rep.add_argument("--size", choices=sorted(SIZES), default="full")
    args = ap.parse_args(argv)
    if args.cmd in ("setup", "all"):
        from bench.setup_step import setup
        code = setup()
        if args.cmd == "setup" or code != 0:
            return code
    if args.cmd == "report":
        from bench.report import report
        report(args.size)
        return 0
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    if not args.verbose:  # retries during the failover scenario are expected
        logging.getLogger("concord").setLevel(logging.ERROR)
    only = {s for s in args.only.split(",") if s}
    systems = [s for s in args.systems.split(",") if s]
    bad = sorted(only - set(SCENARIOS)) + sorted(set(systems) - set(SYSTEMS))
    if bad:
        ap.error(f"unknown scenario or system: {', '.join(bad)}")
    needs = {"etcd": "etcd", "redis": "redis-server"}
    missing = [s for s in systems if s in needs and shutil.which(needs[s]) is None]
    if missing:
        ap.error(f"not installed: {', '.join(missing)} (run `python -m bench setup`)")
    from bench.procs import install_signal_handlers
    from bench.scenarios import run
    size = SIZES[args.size]
    if args.failovers is not None:
        if args.failovers < 1:
            ap.error(f"--failovers must be >= 1, got {args.failovers}")
        size = dataclasses.replace(size, failovers=args.failovers)
    install_signal_handlers()  # Ctrl-C / SIGTERM: the finally blocks stop every process
    run(args.size, systems, only, size)
    if args.cmd == "all":
        from bench.report import report
        report(args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
