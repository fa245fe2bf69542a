"""
Raft safety invariants, checked incrementally while a simulation runs (Raft §5.2-§5.4,
Figure 3):

- election safety: at most one leader per term;
- log matching: two logs with an entry of the same index and term agree on it and on
  everything before it (checked inductively: every (index, term) has one content and one
  predecessor term, across all nodes and all time);
- leader completeness: a leader of term T holds every entry committed in a term below
  T (checked once its first entry of its term is in its storage). The term an entry was
  committed in is bounded by the applying node's term at its first apply; only entries
  whose bound is below T are checked, so a stale-term leader elected later in time is
  not held to entries a higher term committed;
- state-machine safety: every node applies the same entry at each index;
- stored-log agreement: every entry a node stores (not only those it was given to
  append: a snapshot install or a compaction changes the log too) has the content and
  predecessor term the cluster saw for its (index, term), and agrees with the committed
  log up to the node's commit index;
- quorums: an entry a leader counts committed, and a read round a leader releases, was
  acknowledged by a voter majority of every half of the leader's configuration (the
  one before or the one after the step that decided it: a step may apply a membership
  change). Commit acknowledgements are read off the members' fake disks, read
  acknowledgements off the HEARTBEAT_RESP messages delivered to the leader, so neither
  trusts the core's own bookkeeping;
- durability before acknowledgement: a granted vote leaves a node only once its disk
  holds that vote (or a later term).

Pure. Violations are collected as text (the first one also stops the run).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Protocol

from concord.ids import NodeId
from concord.raft.messages import Entry, EntryType

__all__ = ["Config", "SafetyChecker", "StoredLog", "Violation", "has_quorum"]


@dataclass(frozen=True, slots=True)
class Violation:
    check: str  # election_safety | log_matching | leader_completeness | state_machine_safety | ...
    time_ms: int
    detail: str

    def describe(self) -> str:
        return f"{self.check} at t={self.time_ms}ms: {self.detail}"


def _digest(entry: Entry) -> tuple[EntryType, int]:
    return entry.type, zlib.crc32(entry.data)


#: A configuration as two halves (incoming voters, outgoing voters; outgoing empty unless
#: joint).
Config = tuple[frozenset[NodeId], frozenset[NodeId]]


def has_quorum(configs: list[Config], acked: set[NodeId]) -> bool:
    """Whether `acked` holds a majority of every non-empty half of one of `configs`."""
    return any(
        all(not half or 2 * len(half & acked) > len(half) for half in config)
        for config in configs
    )


def describe_configs(configs: list[Config]) -> str:
    return " or ".join(
        "(" + " ".join(sorted(i)) + ")" + ("&&(" + " ".join(sorted(o)) + ")" if o else "")
        for i, o in configs
    )


@dataclass(slots=True)
class _Election:
    node: NodeId
    term: int
    committed: dict[int, tuple[int, int]]  # index -> (term, bound of the committing term)


@dataclass(slots=True)
class SafetyChecker:
    leaders: dict[int, NodeId] = field(default_factory=dict)
    entries: dict[tuple[int, int], tuple[tuple[EntryType, int], int]] = field(
        default_factory=dict
    )
    applied: dict[int, tuple[int, tuple[EntryType, int], NodeId]] = field(default_factory=dict)
    committed: dict[int, tuple[int, int]] = field(default_factory=dict)
    pending_elections: list[_Election] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    now_ms: int = 0

    def fail(self, check: str, detail: str) -> None:
        self.violations.append(Violation(check, self.now_ms, detail))

    def on_leader(self, node: NodeId, term: int) -> None:
        """`node` is leader in `term` (called whenever observed; idempotent)."""
        holder = self.leaders.get(term)
        if holder is None:
            self.leaders[term] = node
            self.pending_elections.append(_Election(node, term, dict(self.committed)))
        elif holder != node:
            self.fail("election_safety", f"term {term} has leaders {holder} and {node}")

    def on_append(self, node: NodeId, prev_term: int | None, entries: list[Entry]) -> None:
        """`node` appended `entries` to its log; `prev_term` precedes the first (if known)."""
        prev = prev_term
        for e in entries:
            digest = _digest(e)
            seen = self.entries.get((e.index, e.term))
            if seen is None:
                if prev is not None:
                    self.entries[(e.index, e.term)] = (digest, prev)
            else:
                seen_digest, seen_prev = seen
                if seen_digest != digest:
                    self.fail("log_matching",
                              f"{node} entry {e.index}/{e.term} differs from another node's")
                elif prev is not None and prev != seen_prev:
                    self.fail("log_matching",
                              f"{node} entry {e.index}/{e.term} follows term {prev}, "
                              f"another log has it after term {seen_prev}")
            prev = e.term

    def on_apply(self, node: NodeId, entry: Entry, node_term: int) -> None:
        """`node`, now in `node_term`, applied `entry` to its state machine."""
        digest = _digest(entry)
        seen = self.applied.get(entry.index)
        if seen is None:
            self.applied[entry.index] = (entry.term, digest, node)
            # Whoever applies first learned the commit from a leader of a term no
            # higher than its own: node_term bounds the committing term from above.
            self.committed[entry.index] = (entry.term, node_term)
            return
        term, seen_digest, other = seen
        if term != entry.term or seen_digest != digest:
            self.fail("state_machine_safety",
                      f"index {entry.index}: {node} applied term {entry.term}, "
                      f"{other} applied term {term} (or different data)")

    def on_snapshot_applied(self, node: NodeId, index: int, term: int) -> None:
        seen = self.applied.get(index)
        if seen is not None and seen[0] != term:
            self.fail("state_machine_safety",
                      f"{node} installed a snapshot at {index}/{term}, "
                      f"{seen[2]} applied term {seen[0]} there")

    def check_stored(self, node: NodeId, log: StoredLog, commit: int) -> None:
        """Every entry `node` stores agrees with the cluster's (see the module docstring)."""
        first, last = log.first_index(), log.last_index()
        if last < first:
            return
        prev = log.term(first - 1)
        for e in log.entries(first, last + 1):
            seen = self.entries.get((e.index, e.term))
            if seen is not None and (seen[0] != _digest(e) or seen[1] != prev):
                self.fail("stored_log",
                          f"{node} stores {e.index}/{e.term} after term {prev}; the cluster "
                          f"saw it after term {seen[1]} (or with other data)")
                return
            applied = self.applied.get(e.index)
            if e.index <= commit and applied is not None and applied[0] != e.term:
                self.fail("stored_log",
                          f"{node} stores {e.index}/{e.term} at or below its commit "
                          f"{commit}; the committed entry is {e.index}/{applied[0]}")
                return
            prev = e.term

    def check_commit_quorum(
        self, node: NodeId, term: int, index: int, holders: set[NodeId], configs: list[Config]
    ) -> None:
        """Leader `node` counts `index` committed; `holders` have it on disk."""
        if not has_quorum(configs, holders):
            self.fail("commit_quorum",
                      f"leader {node} term {term} committed index {index}, on disk only at "
                      f"{sorted(holders)}: no majority of {describe_configs(configs)}")

    def check_read_quorum(
        self, node: NodeId, term: int, acks: set[NodeId], configs: list[Config]
    ) -> None:
        """Leader `node` released a read round acknowledged by `acks` (itself included)."""
        if not has_quorum(configs, acks):
            self.fail("read_quorum",
                      f"leader {node} term {term} released a read round acknowledged by "
                      f"{sorted(acks)}: no majority of {describe_configs(configs)}")

    def check_vote_durable(
        self, node: NodeId, to: NodeId, term: int, durable_term: int, durable_vote: NodeId | None
    ) -> None:
        """`node` sends a granted vote for `to` in `term`; its disk holds this hard state."""
        if durable_term > term or (durable_term == term and durable_vote == to):
            return
        self.fail("vote_durable",
                  f"{node} granted its term-{term} vote to {to} while its disk holds "
                  f"term {durable_term} vote {durable_vote}")

    def check_leader_logs(self, log_of: dict[NodeId, LogView]) -> None:
        """Verify pending elections whose leader has persisted an entry of its term."""
        still = []
        for election in self.pending_elections:
            log = log_of.get(election.node)
            if log is None:
                continue  # crashed: nothing to check
            last_term = log.term(log.last_index())
            if last_term < election.term:
                still.append(election)
                continue
            if last_term > election.term:
                continue  # a later term already: skip
            first = log.first_index()
            last = log.last_index()
            for index, (term, bound) in election.committed.items():
                if index < first or bound >= election.term:
                    continue
                if index > last:
                    self.fail("leader_completeness",
                              f"leader {election.node} term {election.term} lacks "
                              f"committed entry {index}/{term} (last index {last})")
                    break
                have = log.term(index)
                if have != term:
                    self.fail("leader_completeness",
                              f"leader {election.node} term {election.term} has "
                              f"{index}/{have}, committed was {index}/{term}")
                    break
        self.pending_elections = still


class LogView(Protocol):
    """What the checker reads of a node's storage (MemoryStorage satisfies it)."""

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def term(self, i: int) -> int: ...


class StoredLog(LogView, Protocol):
    """A node's stored log, entries included (MemoryStorage satisfies it)."""

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]: ...
