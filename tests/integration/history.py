"""
A client history recorder for fault tests against real processes: each put/get/delete is
recorded as a `concord.sim.linearizability.Operation` (times: time.monotonic()) with the
outcome the reply proves, and `check()` runs the linearizability checker over it.

Outcomes: an `ok` reply is OK; a refusal that certainly applied nothing (`not_leader`,
`no_leader`, `storage_unavailable`, `shutting_down`) is FAIL; silence or `timeout` is
UNKNOWN for writes (it may still apply) and dropped for reads. Any other error fails
the test at once: a fault must never produce a wrong answer.

Also the fault tests' shared helpers: the test-only disk fault file of each node
(concord/storage/faults.py) and the end-of-test check that every acknowledged write is
read back from every node.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Hashable
from dataclasses import dataclass, field

from concord.errors import RequestTimeoutError
from pathlib import Path

from concord.sim.linearizability import ABSENT, CheckResult, Operation, OpKind, Outcome, check_history

from tests.helpers import wait_until
from tests.integration.cluster import Cluster

REFUSED = frozenset({"not_leader", "no_leader", "storage_unavailable", "shutting_down"})


@dataclass
class History:
    """Operations recorded against one cluster, and counters for the report."""

    c: Cluster
    ops: list[Operation] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _call(self, node: str, msg: dict[str, object], timeout_ms: int) -> dict[str, object] | None:
        try:
            reply = self.c.request(node, msg, timeout_ms=timeout_ms)
        except RequestTimeoutError:
            self.errors["silence"] = self.errors.get("silence", 0) + 1
            return None
        if not reply.get("ok"):
            code = str(reply.get("error"))
            self.errors[code] = self.errors.get(code, 0) + 1
            assert code in REFUSED or code == "timeout" or code == "not_found", reply
        return reply

    def put(self, node: str, key: str, value: Hashable, timeout_ms: int = 1000) -> dict[str, object] | None:
        start = time.monotonic()
        reply = self._call(node, {"op": "put", "key": key, "value": value}, timeout_ms)
        end = time.monotonic()
        if reply is None or reply.get("error") == "timeout":
            outcome = Outcome.UNKNOWN
            end_time: float | None = None
        elif reply.get("ok"):
            outcome, end_time = Outcome.OK, end
        else:
            outcome, end_time = Outcome.FAIL, end
        self.ops.append(Operation(next(self._ids), OpKind.PUT, key, (value,), start, end_time, outcome))
        return reply

    def get(self, node: str, key: str, consistency: str = "leader", timeout_ms: int = 1000) -> Hashable:
        """The value read (ABSENT if missing), or None when the read was refused or unanswered."""
        start = time.monotonic()
        reply = self._call(node, {"op": "get", "key": key, "consistency": consistency}, timeout_ms)
        end = time.monotonic()
        if reply is None:
            return None
        if reply.get("ok"):
            value = reply.get("value")
            assert isinstance(value, Hashable)
        elif reply.get("error") == "not_found":
            value = ABSENT
        else:
            return None
        self.ops.append(Operation(next(self._ids), OpKind.GET, key, (), start, end, Outcome.OK, value))
        return value

    def counts(self) -> dict[str, int]:
        writes = [op for op in self.ops if op.kind is not OpKind.GET]
        return {
            "writes_ok": sum(op.outcome is Outcome.OK for op in writes),
            "writes_refused": sum(op.outcome is Outcome.FAIL for op in writes),
            "writes_unknown": sum(op.outcome is Outcome.UNKNOWN for op in writes),
            "reads_checked": sum(op.kind is OpKind.GET for op in self.ops),
        }

    def check(self) -> CheckResult:
        result = check_history(self.ops, time_budget_s_per_key=10.0)
        assert result.ok, result.describe()
        return result


@dataclass
class Workload:
    """
    One sequential client: puts `v<n>` to a few keys on the node it believes leads
    (following `not_leader` hints, moving on after silence or a refusal) and reads them
    back with `leader` consistency, from that node and from every other node in turn.
    """

    h: History
    keys: tuple[str, ...] = ("a", "b", "c")
    timeout_ms: int = 1000
    target: str = ""
    _n: int = 0

    def step(self) -> None:
        c = self.h.c
        ids = c.running_ids()
        if self.target not in ids:
            self.target = ids[0]
        self._n += 1
        key = self.keys[self._n % len(self.keys)]
        reply = self.h.put(self.target, key, f"v{self._n}", self.timeout_ms)
        hint = None if reply is None else reply.get("leader")
        if reply is not None and isinstance(hint, str):
            self.target = next((n for n in ids if c.nodes[n].client == hint), self.target)
        elif reply is None or not reply.get("ok"):
            self.target = ids[(ids.index(self.target) + 1) % len(ids)]
        self.h.get(self.target, key, "leader", self.timeout_ms)
        self.h.get(ids[self._n % len(ids)], key, "leader", self.timeout_ms)

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.step()


def set_disk_faults(path: Path, **rules: object) -> None:
    """Replace the fault file atomically (the writer re-reads it when it changes)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(json.dumps(rules))
    os.replace(tmp, path)


def per_node_fault_files(c: Cluster, tmp_path: Path) -> dict[str, Path]:
    """Give every node of a not-yet-started cluster its own fault file."""
    files = {}
    for nid in c.ids:
        files[nid] = tmp_path / f"disk-faults-{nid}.json"
        set_disk_faults(files[nid])
        c.node_settings[nid] = {"faults": {"enabled": True, "disk_file": str(files[nid])}}
    return files


def _answered(value: object) -> list[object] | None:
    """A read's value wrapped so that a falsy value still ends a wait (None: no answer)."""
    return None if value is None else [value]


def acked_present(c: Cluster, h: History) -> int:
    """Every key's last acknowledged value is what every node reads (strong); returns the count."""
    last: dict[str, object] = {}
    for op in h.ops:  # sequential client: the last acknowledged put per key wins
        if op.kind.value == "put" and op.outcome.value == "ok":
            last[op.key] = op.args[0]
    for nid in c.ids:
        for key, value in last.items():
            read = wait_until(lambda: _answered(h.get(nid, key, "strong", 2000)), 15,
                              lambda: f"{nid} {key} {h.errors}")
            assert read is not None
            got = read[0]
            assert value == got or any(  # a later unknown-outcome put may have landed
                op.key == key and op.outcome.value == "unknown" and op.args[0] == got for op in h.ops
            ), (nid, key, value, got)
    return len(last)
