"""
The leader's view of one follower's log (etcd-io/raft's tracker.Progress and Inflights).

Pure. No IO, no clock, no global randomness; stdlib-only imports.

States: PROBE sends one APPEND per heartbeat interval until the follower's match is
found; REPLICATE pipelines APPENDs, at most `max_inflight_msgs` unacknowledged; SNAPSHOT
sends InstallSnapshot chunks and no APPENDs. Invariant: match < next.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum

from concord.errors import RaftInvariantError


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """The last index of each APPEND in flight to one follower, oldest first."""

    __slots__ = ("capacity", "_indexes")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._indexes: deque[int] = deque()

    def add(self, index: int) -> None:
        if len(self._indexes) >= self.capacity:
            raise RaftInvariantError(f"inflights full ({self.capacity}), cannot add {index}")
        if self._indexes and index <= self._indexes[-1]:
            raise RaftInvariantError(f"inflight index {index} is not increasing")
        self._indexes.append(index)

    def free_le(self, index: int) -> None:
        """Forget APPENDs whose last index is <= `index` (acknowledged)."""
        indexes = self._indexes
        while indexes and indexes[0] <= index:
            indexes.popleft()

    def full(self) -> bool:
        return len(self._indexes) >= self.capacity

    def count(self) -> int:
        return len(self._indexes)

    def reset(self) -> None:
        self._indexes.clear()


class Progress:
    """
    Replication state of one peer, kept by the leader.

    Attributes:
        match: highest index known replicated on the peer.
        next: index of the next entry to send.
        pending_snapshot: index of the snapshot being sent (SNAPSHOT state).
        snapshot_sent_offset, snapshot_acked_offset: chunk positions of that transfer.
        snapshot_idle_ticks: ticks since the last chunk acknowledgement.
        recent_active: heard from since the last check-quorum round.
        msg_app_flow_paused: no more APPENDs until an acknowledgement or heartbeat.
    """

    __slots__ = (
        "match",
        "next",
        "state",
        "pending_snapshot",
        "snapshot_sent_offset",
        "snapshot_acked_offset",
        "snapshot_idle_ticks",
        "recent_active",
        "msg_app_flow_paused",
        "inflights",
        "is_learner",
    )

    def __init__(self, match: int, next_index: int, max_inflight: int, is_learner: bool) -> None:
        self.match = match
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.snapshot_sent_offset = 0
        self.snapshot_acked_offset = 0
        self.snapshot_idle_ticks = 0
        self.recent_active = False
        self.msg_app_flow_paused = False
        self.inflights = Inflights(max_inflight)
        self.is_learner = is_learner

    def __repr__(self) -> str:
        return (
            f"Progress(state={self.state.name}, match={self.match}, next={self.next}, "
            f"inflight={self.inflights.count()}, learner={self.is_learner})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.msg_app_flow_paused = False
        self.pending_snapshot = 0
        self.snapshot_sent_offset = 0
        self.snapshot_acked_offset = 0
        self.snapshot_idle_ticks = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, count: int) -> None:
        """Record an APPEND of `count` entries starting at `next`."""
        if self.state == ProgressState.REPLICATE:
            if count > 0:
                self.next += count
                self.inflights.add(self.next - 1)
            self.msg_app_flow_paused = self.inflights.full()
        elif self.state == ProgressState.PROBE:
            self.msg_app_flow_paused = True
        else:
            raise RaftInvariantError(f"sending entries in state {self.state.name}")

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to `index`; False if it is not news."""
        if index <= self.match:
            return False
        self.match = index
        if self.next < index + 1:
            self.next = index + 1
        self.msg_app_flow_paused = False
        return True

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """
        A rejection of the APPEND probing `rejected`; move `next` back (to just after
        `match_hint`) unless the rejection is stale.
        """
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.msg_app_flow_paused = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.SNAPSHOT:
            return True
        return self.msg_app_flow_paused
