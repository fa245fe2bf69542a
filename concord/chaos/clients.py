"""
The clients of a chaos run and the record they keep.

Writers (put, put_if, delete, delete_if, and strong gets) and readers (get at eventual,
leader and strong consistency) work on a few keys, then move to fresh ones (a bounded
history per key). Every invocation and completion is recorded (time.monotonic in this
process) as a concord.sim.linearizability.Operation; eventual reads are not (they may be
stale by contract). Each client sends one attempt per operation (no resend): an
unanswered write is UNKNOWN, an unanswered read FAIL.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq

from concord.chaos.checks import AckedWrite
from concord.sim.linearizability import ABSENT, Operation, OpKind, Outcome

if TYPE_CHECKING:
    from concord.chaos.run import ChaosRun

__all__ = ["KEYS_PER_GENERATION", "OPS_PER_GENERATION", "Recorder", "classify", "run_client"]

KEYS_PER_GENERATION = 3
OPS_PER_GENERATION = 240  # then the clients move to fresh keys: bounded history per key

Context = zmq.Context[zmq.Socket[bytes]]

_OP_KINDS = {"put": OpKind.PUT, "put_if": OpKind.PUT_IF, "delete": OpKind.DELETE,
             "delete_if": OpKind.DELETE_IF, "get": OpKind.GET}


class Recorder:
    """The shared, locked record of the run (history, counters, acknowledged writes)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.lock = threading.Lock()
        self.history: list[Operation] = []
        self.ops: collections.Counter[tuple[str, str]] = collections.Counter()
        self.faults: collections.Counter[str] = collections.Counter()
        self.acked: list[AckedWrite] = []
        self.write_ok_times: list[float] = []
        self.count = 0

    def now(self) -> float:
        return (time.monotonic() - self.t0) * 1000.0

    def next_index(self) -> int:
        with self.lock:
            self.count += 1
            return self.count

    def op(self, kind: str, outcome: str, op: Operation | None = None,
           acked: AckedWrite | None = None) -> None:
        with self.lock:
            self.ops[(kind, outcome)] += 1
            if op is not None:
                self.history.append(op)
            if acked is not None:
                self.acked.append(acked)
                self.write_ok_times.append(time.monotonic() - self.t0)

    def fault(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] += 1


@dataclass(slots=True)
class _Request:
    """One drawn operation: its kind, read consistency ("" for writes), map and args."""

    kind: str
    consistency: str
    msg: dict[str, object]
    args: tuple[Hashable, ...]


def _draw(rng: random.Random, writer: bool, key: str, value: int, seen: Hashable) -> _Request:
    """The next operation of a client (the random draws of the kind and consistency)."""
    consistency = ""
    if writer:
        kind = rng.choices(["put", "put_if", "delete", "delete_if", "get"], [5, 3, 1, 1, 2])[0]
        if kind == "get":
            consistency = "strong"
    else:
        kind = "get"
        consistency = rng.choice(["eventual", "leader", "strong"])
    msg: dict[str, object] = {"op": kind, "key": key}
    args: tuple[Hashable, ...] = ()
    if kind == "put":
        msg["value"] = value
        args = (value,)
    elif kind == "put_if":
        msg["value"] = value
        if seen is ABSENT:
            msg["absent"] = True
        else:
            msg["expected"] = seen
        args = (seen, value)
    elif kind == "delete_if":
        if seen is ABSENT:
            kind = "delete"
            msg["op"] = kind
        else:
            msg["expected"] = seen
            args = (seen,)
    elif consistency:
        msg["consistency"] = consistency
    return _Request(kind, consistency, msg, args)


def _remember(last_seen: dict[str, Hashable], key: str, kind: str, value: int, outcome: Outcome,
              result: Hashable) -> None:
    """What this client now knows the key holds (for its next conditional write)."""
    if outcome is not Outcome.OK:
        return
    if kind == "get":
        last_seen[key] = result
    elif kind == "put" or (kind == "put_if" and result is True):
        last_seen[key] = value
    elif kind == "delete" or (kind == "delete_if" and result is True):
        last_seen[key] = ABSENT


def _recorded(cid: int, req: _Request, key: str, t_inv: float, t_done: float, outcome: Outcome,
              result: Hashable, reply: Mapping[str, object] | None) -> tuple[Operation | None, AckedWrite | None]:
    """The history entry (none for eventual reads) and the acknowledged write, if any."""
    op = None
    if req.consistency != "eventual":  # eventual reads may be stale by contract
        op = Operation(cid, _OP_KINDS[req.kind], key, req.args, t_inv,
                       t_done if outcome is not Outcome.UNKNOWN else None, outcome,
                       result if outcome is Outcome.OK else None)
    acked = None
    revision = reply.get("revision") if reply is not None and reply.get("ok") else None
    if req.kind != "get" and isinstance(revision, int) and not isinstance(revision, bool):
        if not (req.kind == "delete" and result is False):
            acked = AckedWrite(key, revision)
    return op, acked


def run_client(run: ChaosRun, cid: int, writer: bool) -> None:
    """One client thread: operations until `run.stop`, each recorded in `run.rec`."""
    rng = random.Random(f"{run.o.seed}:client:{cid}")
    ctx: Context = zmq.Context()
    target = rng.choice(run.ids)
    last_seen: dict[str, Hashable] = {}
    counter = 0
    try:
        while not run.stop.is_set():
            run.stop.wait(rng.uniform(0.002, 0.03))
            if run.stop.is_set():
                break
            i = run.rec.next_index()
            key = f"k{i // OPS_PER_GENERATION}.{rng.randrange(KEYS_PER_GENERATION)}"
            counter += 1
            value = cid * 1_000_000 + counter
            req = _draw(rng, writer, key, value, last_seen.get(key, ABSENT))
            if not writer and rng.random() < 0.5:
                target = rng.choice(run.ids)  # any node: followers answer or redirect
            sent_to = target
            t_inv = run.rec.now()
            reply = run.call(target, req.msg, ctx)
            t_done = run.rec.now()
            outcome, result, note = classify(req.kind, reply)
            _remember(last_seen, key, req.kind, value, outcome, result)
            if reply is not None and reply.get("error") in ("not_leader", "no_leader"):
                hinted = run.node_of(reply.get("leader"))
                target = hinted if hinted is not None else rng.choice(run.ids)
            elif reply is None:
                target = rng.choice(run.ids)
            op, acked = _recorded(cid, req, key, t_inv, t_done, outcome, result, reply)
            label = f"get[{req.consistency}]" if req.consistency else req.kind
            word = {"ok": "success", "fail": "fail", "unknown": "unknown"}[outcome.value]
            run.rec.op(label, outcome.value, op, acked)
            run.log(f"{label}: {word}{note} i={i} key={key} node={sent_to}"
                    f" latency_ms={t_done - t_inv:.0f}")
    finally:
        ctx.destroy(linger=0)


def classify(kind: str, reply: Mapping[str, object] | None) -> tuple[Outcome, Hashable, str]:
    """The outcome of one attempt of `kind`, its result, and a note for the log line."""
    write = kind != "get"
    if reply is None:
        return (Outcome.UNKNOWN if write else Outcome.FAIL), None, " (no reply)"
    if reply.get("ok"):
        if kind == "get":
            value = reply.get("value")
            return Outcome.OK, hashable(value), ""
        if kind == "delete":
            return Outcome.OK, bool(reply.get("deleted")), ""
        if kind in ("put_if", "delete_if"):
            return Outcome.OK, True, ""
        return Outcome.OK, None, ""
    error = str(reply.get("error"))
    if kind == "get" and error == "not_found":
        return Outcome.OK, ABSENT, ""
    if kind in ("put_if", "delete_if") and error == "condition_failed":
        return Outcome.OK, False, " (condition_failed)"
    if error in ("not_leader", "no_leader") or not write:
        return Outcome.FAIL, None, f" error={error}"
    if error in ("timeout", "shutting_down"):
        return Outcome.UNKNOWN, None, f" error={error}"
    return Outcome.FAIL, None, f" error={error}"


def hashable(value: object) -> Hashable:
    """A reply value as a hashable (lists as tuples, maps as sorted item tuples)."""
    if isinstance(value, list):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), hashable(v)) for k, v in value.items()))
    return value if isinstance(value, Hashable) else repr(value)
