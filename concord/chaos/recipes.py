"""
The recipe actors of a chaos run and their checks (docs/chaos.md "Lock and counter"):

- lock holders: `lockers` processes of `python -m concord.chaos.locker` contend for one
  lock; the nemesis `holders` SIGKILLs one at random and restarts it. `check_lock` reads
  their logs: no two holds may overlap in time (a hold runs from `acquired` to the
  earlier of its `release` and its lease's last logged local deadline), and fencing
  tokens must grow in the order the holds began.
- counter: `incrementers` threads, each with its own concord Client (exactly-once
  sessions, retries) starting at a different node, `incr` one key; at the end a strong
  read must find acked <= value <= acked + unknown (equality when no outcome was
  unknown): no increment lost, none applied twice.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from concord.chaos.checks import SafetyResult
from concord.credentials import TOKEN_ENV
from concord.client import Client
from concord.errors import ClientError, UnknownResultError

__all__ = ["COUNTER_KEY", "Counter", "Hold", "LockerProc", "check_counter", "check_lock", "read_holds"]

logger = logging.getLogger(__name__)

COUNTER_KEY = "chaos/counter"
LOCK_NAME = "chaos/lock"
LOCK_TTL_S = 2.0


@dataclass(frozen=True, slots=True)
class Hold:
    """One holder's time with the lock (time.monotonic): [start, end)."""

    process: str
    lease: int
    token: int
    start: float
    end: float


def read_holds(logs: dict[str, list[str]]) -> list[Hold]:
    """The holds of every locker log (lines as written by concord.chaos.locker)."""
    holds: list[Hold] = []
    for process, lines in logs.items():
        deadlines: dict[int, float] = {}
        released: dict[int, float] = {}
        acquired: list[tuple[int, int, float]] = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # the line a SIGKILL cut short
            event, lease = rec.get("e"), rec.get("lease")
            if event == "renew":
                deadlines[lease] = max(deadlines.get(lease, 0.0), rec["deadline"])
            elif event == "acquired":
                acquired.append((lease, rec["token"], rec["t"]))
            elif event == "release":
                released.setdefault(lease, rec["t"])
        for lease, token, start in acquired:
            end = min(released.get(lease, float("inf")), deadlines.get(lease, start))
            holds.append(Hold(process, lease, token, start, max(start, end)))
    return sorted(holds, key=lambda h: h.start)


def check_lock(holds: list[Hold]) -> SafetyResult:
    """No two holds overlap; tokens grow with the holds' start times."""
    violations: list[str] = []
    latest: Hold | None = None  # the hold that ends last among those begun so far
    top_token: Hold | None = None
    for hold in holds:
        if latest is not None and hold.start < latest.end:
            violations.append(
                f"two holders at once: {hold.process} (token {hold.token}) from t={hold.start:.3f} "
                f"while {latest.process} (token {latest.token}) held until t={latest.end:.3f}")
        if top_token is not None and hold.token <= top_token.token:
            violations.append(
                f"fencing token did not grow: {hold.process} got {hold.token} at t={hold.start:.3f} "
                f"after {top_token.process} got {top_token.token}")
        if latest is None or hold.end > latest.end:
            latest = hold
        if top_token is None or hold.token > top_token.token:
            top_token = hold
    return SafetyResult(violations, checked=len(holds))


class LockerProc:
    """One locker process (restarted after a SIGKILL), logging to its own file."""

    def __init__(self, name: str, log: Path, endpoints: list[str], seed: int,
                 unsafe: bool = False, token: str | None = None) -> None:
        self.name = name
        self.token = token
        self.unsafe = unsafe
        self.log = log
        self.endpoints = endpoints
        self.seed = seed
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "concord.chaos.locker", "--endpoints", ",".join(self.endpoints),
             "--name", LOCK_NAME, "--ttl", str(LOCK_TTL_S), "--log", str(self.log),
             "--seed", str(self.seed * 1000 + self.starts), *(["--unsafe"] if self.unsafe else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=None if self.token is None else {**os.environ, TOKEN_ENV: self.token})

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10.0)

    def stop(self) -> None:
        """SIGTERM (the holder releases), then SIGKILL after 10 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10.0)
        self.proc = None

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


class Counter:
    """The incrementers' tally: acknowledged, unknown and failed increments."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.lock = threading.Lock()
        self.acked = 0
        self.unknown = 0
        self.failed = 0

    def run(self, endpoints: list[str], stop: threading.Event) -> None:
        """One incrementer: incr until `stop`, counting outcomes."""
        with Client(endpoints, shm=False, timeout_s=10.0, token=self.token) as client:
            while not stop.is_set():
                try:
                    client.incr(COUNTER_KEY)
                    outcome = "acked"
                except UnknownResultError:
                    outcome = "unknown"
                except ClientError:
                    outcome = "failed"
                with self.lock:
                    setattr(self, outcome, getattr(self, outcome) + 1)
                stop.wait(0.01)


def check_counter(counter: Counter, value: object) -> SafetyResult:
    """The final value is between the acknowledged and the acknowledged + unknown increments."""
    if value is None:
        value = 0
    if not isinstance(value, int):
        return SafetyResult([f"counter holds {value!r}, not an integer"], checked=1)
    lo, hi = counter.acked, counter.acked + counter.unknown
    violations = [] if lo <= value <= hi else [
        f"counter is {value}, expected {lo}..{hi} (acked {counter.acked}, unknown {counter.unknown})"]
    return SafetyResult(violations, checked=counter.acked)
