"""
CPU of a shared-memory reset of a restored kv, whole and in steps, alternately, in one process.

    PYTHONPATH=$PWD python3 -m bench.shm_reset_steps [--keys 1000000] [--rounds 2]

Builds a KvStateMachine as a node applies a bulk load (bench.kv_restore.build), then
publishes its records into a fresh store with `Publisher.reset` and with
`Publisher.begin_reset` + `reset_step(RESET_STEP_S)` in turn (what the raft worker does
after a restart, concord.node.worker_effects), and prints the CPU of each (process time)
and the steps' count, median and longest.
"""

from __future__ import annotations

import argparse
import os
import time

from bench.kv_restore import build
from concord.kv.record import Space
from concord.node.raft_worker import RESET_STEP_S
from concord.shm.layout import SegmentNames
from concord.shm.publisher import Publisher
from concord.shm.segments import create_store, unlink_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sm = build(args.keys)
    names = SegmentNames(f"rsteps{os.getpid()}", "s")
    create_store(names)
    pub = Publisher.attach(names)
    try:
        for point in range(1, args.rounds + 1):
            started = time.process_time()
            pub.reset([(Space.USER, sm.records()), (Space.SYSTEM, sm.system_records())],
                      2 * point, 2 * point, 0)
            print(f"reset whole: {time.process_time() - started:.3f} s CPU", flush=True)
            started = time.process_time()
            pub.begin_reset([(Space.USER, sm.records()), (Space.SYSTEM, sm.system_records())],
                            2 * point + 1, 2 * point + 1, 0)
            begin = time.process_time() - started
            steps: list[float] = []
            done = False
            while not done:
                step = time.process_time()
                done = pub.reset_step(RESET_STEP_S)
                steps.append(time.process_time() - step)
            steps.sort()
            print(f"reset in steps: {begin + sum(steps):.3f} s CPU (taking the records "
                  f"{begin:.3f} s, {len(steps)} steps, median {steps[len(steps) // 2] * 1000:.1f}"
                  f" ms, longest {steps[-1] * 1000:.1f} ms), load {os.getloadavg()[0]:.1f}",
                  flush=True)
    finally:
        pub.close()
        unlink_store(names)


if __name__ == "__main__":
    main()
