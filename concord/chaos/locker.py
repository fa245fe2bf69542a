"""
`python -m concord.chaos.locker`: one lock-holder process of a chaos run.

It takes the lock `--name` (concord.recipes.Lock) again and again, holds it for a random
while, and releases it, recording in `--log` (JSON lines, appended with one write(2)
each, so a SIGKILL loses at most the line being written, never a recorded one):

    {"e": "renew", "lease": id, "deadline": t}     a new local deadline, logged BEFORE
                                                   the holder may act on it
    {"e": "acquired", "lease": id, "token": n, "t": t}
    {"e": "lost", "lease": id, "t": t}             the lease ran out while holding
    {"e": "release", "lease": id, "t": t}          logged BEFORE the release is sent

Times are time.monotonic() (CLOCK_MONOTONIC: one clock for every process of the host).
The chaos run SIGKILLs these processes at random (nemesis `holders`) and checks the logs
with `concord.chaos.recipes.check_lock`. SIGTERM: release and exit 0. On a cluster with
auth it sends the token in `CONCORD_TOKEN` (concord.credentials), as `concord` does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from types import FrameType
from typing import Callable

from concord import credentials
from concord.client import Client
from concord.errors import ConcordError
from concord.recipes import Lock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m concord.chaos.locker")
    parser.add_argument("--endpoints", required=True, help="comma-separated client endpoints")
    parser.add_argument("--name", default="chaos/lock")
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--log", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unsafe", action="store_true",
                        help="self-test: take the lock with a plain put (no queue, no lease); "
                             "the chaos checker must find two holders at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(**fields: object) -> None:
        os.write(fd, (json.dumps(fields) + "\n").encode())

    rng = random.Random(args.seed)
    with Client(args.endpoints.split(","), shm=False, timeout_s=5.0,
                token=credentials.token(None)) as client:  # CONCORD_TOKEN
        while not stop.is_set():
            lock = Lock(client, args.name, ttl=args.ttl,
                        on_renew=lambda lease, deadline: record(e="renew", lease=lease, deadline=deadline))
            try:
                token = _unsafe_acquire(client, args, record) if args.unsafe else lock.acquire(timeout_s=10.0)
            except ConcordError:
                stop.wait(rng.uniform(0.05, 0.3))
                continue
            if args.unsafe:
                stop.wait(rng.uniform(0.05, 1.0))
                record(e="release", lease=token, t=time.monotonic())
                continue
            lease_id = lock.lease_id
            record(e="acquired", lease=lease_id, token=token, t=time.monotonic())
            until = time.monotonic() + rng.uniform(0.05, 1.0)
            while time.monotonic() < until and lock.valid() and not stop.is_set():
                stop.wait(0.01)
            if not lock.valid():
                record(e="lost", lease=lease_id, t=time.monotonic())
            record(e="release", lease=lease_id, t=time.monotonic())
            try:
                lock.release()
            except ConcordError:
                pass  # the lease then expires by itself
            stop.wait(rng.uniform(0.0, 0.3))
    os.close(fd)
    return 0


def _unsafe_acquire(client: Client, args: argparse.Namespace,
                    record: Callable[..., None]) -> int:
    """The broken lock of the README: put the key and call it held (no queue, no lease)."""
    started = time.monotonic()
    token = client.put(f"{args.name}/unsafe", args.seed)
    record(e="renew", lease=token, deadline=started + args.ttl)
    record(e="acquired", lease=token, token=token, t=time.monotonic())
    return token


if __name__ == "__main__":
    sys.exit(main())
