"""
After-the-run checks over the nodes' durable Raft logs (read with concord.storage.recovery).

- Log matching: the same (term, index) holds the same entry (type, data, timestamp) in
  every log that still has it.
- State-machine safety: every log whose commit index reaches `i` holds the same entry at
  `i` (entries compacted into a snapshot are skipped).
- Acknowledged writes: a write acknowledged with revision `r` (the Raft index of its
  entry) is the entry at index `r` of the logs that still hold `r`, and that entry is a
  command on the same key.
- One leader per term: from the leaders the status poller observed.

Pure functions over `NodeLog`s; `read_log` is the only IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from concord.errors import ConcordError
from concord.kv.commands import decode_command
from concord.raft.messages import Entry
from concord.storage.recovery import recover

__all__ = ["AckedWrite", "NodeLog", "SafetyResult", "check_acked", "check_leaders", "check_logs",
           "read_log"]


@dataclass(frozen=True, slots=True)
class NodeLog:
    """One node's durable log: what survived on disk at the end of the run."""

    name: str
    snapshot_index: int
    commit: int
    entries: Mapping[int, Entry]


@dataclass(frozen=True, slots=True)
class AckedWrite:
    """A write the cluster acknowledged: its key and the revision in the reply."""

    key: str
    revision: int


@dataclass(frozen=True, slots=True)
class SafetyResult:
    """Violations found (empty: none) and how much was looked at."""

    violations: list[str] = field(default_factory=list)
    checked: int = 0
    unverifiable: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations


def read_log(name: str, data_dir: Path) -> NodeLog:
    """The durable log of one data dir (read only: nothing on disk is repaired)."""
    state = recover(data_dir, repair=False)
    snap = state.snapshot.meta.index if state.snapshot is not None else 0
    return NodeLog(name, snap, state.hard_state.commit, {e.index: e for e in state.entries})


def _ident(entry: Entry) -> tuple[int, int, bytes, int]:
    return (entry.term, int(entry.type), entry.data, entry.timestamp_ms)


def check_logs(logs: Iterable[NodeLog]) -> SafetyResult:
    """Log matching and state-machine safety across every log (see the module docstring)."""
    logs = list(logs)
    violations: list[str] = []
    top = max((log.commit for log in logs), default=0)
    last = max((max(log.entries, default=0) for log in logs), default=0)
    checked = 0
    for index in range(1, max(top, last) + 1):
        by_term: dict[int, tuple[str, tuple[int, int, bytes, int]]] = {}
        committed: dict[tuple[int, int, bytes, int], list[str]] = {}
        for log in logs:
            entry = log.entries.get(index)
            if entry is None:
                continue
            ident = _ident(entry)
            seen = by_term.setdefault(entry.term, (log.name, ident))
            if seen[1] != ident:
                violations.append(f"log matching: index={index} term={entry.term} differs between "
                                  f"{seen[0]} and {log.name}")
            if log.commit >= index:
                committed.setdefault(ident, []).append(log.name)
        if len(committed) > 1:
            holders = "; ".join(f"term={i[0]} on {','.join(n)}" for i, n in committed.items())
            violations.append(f"committed entries differ at index={index}: {holders}")
        checked += 1
        if len(violations) > 20:
            violations.append("... (stopped after 20 violations)")
            break
    return SafetyResult(violations, checked)


def _entry_key(entry: Entry) -> str | None:
    try:
        command = decode_command(entry.data).command
    except ConcordError:
        return None
    key = getattr(command, "key", None)
    if key is None:  # PutIf wraps its Put
        key = getattr(getattr(command, "put", None), "key", None)
    return key if isinstance(key, str) else None


def check_acked(acked: Iterable[AckedWrite], logs: Iterable[NodeLog]) -> SafetyResult:
    """Every acknowledged write is the entry at its revision wherever that index survives."""
    logs = list(logs)
    violations: list[str] = []
    checked = unverifiable = 0
    for write in acked:
        holders = [log for log in logs if write.revision in log.entries]
        if not holders:
            if all(log.snapshot_index >= write.revision for log in logs):
                unverifiable += 1  # compacted everywhere: the final reads cover it
            else:
                violations.append(f"acknowledged write key={write.key!r} revision={write.revision} "
                                  "is in no log")
            continue
        checked += 1
        if all(_entry_key(log.entries[write.revision]) != write.key for log in holders):
            violations.append(f"acknowledged write key={write.key!r} revision={write.revision} "
                              f"is in no log ({', '.join(log.name for log in holders)} hold "
                              "other entries there)")
            continue
        for log in holders:
            found = _entry_key(log.entries[write.revision])
            if found != write.key and log.commit >= write.revision:
                violations.append(f"acknowledged write key={write.key!r} revision={write.revision}: "
                                  f"{log.name} holds a committed entry for key={found!r} there")
    return SafetyResult(violations, checked, unverifiable)


def check_leaders(leaders_by_term: Mapping[int, set[str]]) -> SafetyResult:
    """At most one leader per term among those the status poller saw."""
    violations = [f"term={term} had leaders {sorted(ids)}"
                  for term, ids in sorted(leaders_by_term.items()) if len(ids) > 1]
    return SafetyResult(violations, len(leaders_by_term))
