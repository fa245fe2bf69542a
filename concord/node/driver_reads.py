"""
The driver's reads: `submit_read` (eventual, leader-lease and ReadIndex reads), the
ReadIndex rounds and their answers (lease probes included), and releasing reads once
the state machine applied far enough (Raft thesis §6.4).

Methods of `concord.node.driver.Driver`, kept here by concern: each function takes the
driver as `d` and is bound in the class body.

Pure. No IO, no clock, no global randomness, no threads.

Leader reads and their lease (NB, a divergence worth knowing): a `leader` read is served
from local state only while this node is leader and holds a lease. The lease is renewed
by a ReadIndex probe every heartbeat: when the probe issued at time T is confirmed by a
quorum, every voter of that quorum heard from this leader after T, and (check_quorum)
ignores votes for `election_ticks` of its own ticks after that. The lease therefore
lasts `(election_ticks - 1) * tick_ms - lease_margin_ms` from T. Assumptions, documented
here: tick rates differ by less than the margin, and a restarted node
does not vote for `election_ticks` ticks (the driver enforces this by holding VOTE and
PRE_VOTE requests after start: a restart would otherwise forget the lease it granted).
Leadership transfer (TimeoutNow overrides the voters' lease) ends the lease when it
starts, and it stays ended until a probe sent after the transfer was abandoned is
confirmed: the probes in flight when it starts are dropped, and none goes out while the
core has a transfer pending (`RaftNode.lead_transferee`). NB: this assumes a TimeoutNow
reaches its target within the election timeout the leader waits before abandoning the
transfer, or never (one delayed longer could still start a forced election while a
later lease runs).

A `leader` read at a leader without a valid lease (a new leader before its first lease
round, a transfer pending) is not refused: it takes a ReadIndex round, as a `strong`
read does, and is served once applied reaches the read index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from concord.node.driver_types import Consistency, Reply, ReplyStatus
from concord.raft.state import ReadState, Role

if TYPE_CHECKING:
    from concord.node.driver import Driver

_READ_CTX = b"\x00R"  # ReadIndex contexts of client reads


@dataclass(slots=True)
class _PendingRead:
    request_id: int
    key: str
    deadline_ms: int
    consistency: Consistency
    index: int | None = None  # the read index, once known


def submit_read(d: Driver, request_id: int, key: str, consistency: Consistency) -> None:
    """
    Ask to read `key`. The reply says when (and at which applied index) the caller
    may read its state machine; the caller reads inside the reply callback.
    """
    now = d._timer.now_ms()
    read = _PendingRead(request_id, key, now + d.config.read_timeout_ms, consistency)
    if consistency is Consistency.EVENTUAL:
        d._answer_read(read)
        return
    if consistency is Consistency.LEADER and d.config.leader_reads:
        if d.role is not Role.LEADER:
            d._reply(
                Reply(request_id, ReplyStatus.NOT_LEADER, leader_hint=d._hint(), key=key)
            )
            return
        if now >= d._lease_until_ms:
            # No lease (a new leader before its first lease round, a transfer
            # pending): a ReadIndex round, as for a strong read, instead of a refusal.
            d._read_index(read)
            return
        if d.applied_term != d.term:
            # Not yet applied an entry of its own term: earlier terms' committed
            # entries may be missing from the state machine.
            d._leader_reads.append(read)
        elif d.applied_index >= d.commit:
            d._answer_read(read)
        else:
            # NB: the leader may commit (through a quorum of followers) before it
            # applies; a follower may already serve those entries. Wait for them.
            read.index = d.commit
            d._waiting_reads.append(read)
        return
    d._read_index(read)


def read_index(d: Driver, read: _PendingRead) -> None:
    """Serve `read` once applied reaches the index a ReadIndex round confirms."""
    ctx = d._next_ctx(_READ_CTX)
    d._reads[ctx] = read
    d.raw.read_index(ctx)


def on_read_state(d: Driver, rs: ReadState) -> None:
    probe = d._lease_probes.pop(rs.request_ctx, None)
    if probe is not None:
        sent_ms, term = probe
        # Older probes are answered by this one too (a quorum acked after them).
        for ctx in [c for c, (t, _) in d._lease_probes.items() if t <= sent_ms]:
            del d._lease_probes[ctx]
        if (
            d.role is Role.LEADER
            and term == d.term
            and d.raw.lead_transferee is None
        ):
            d._lease_until_ms = max(d._lease_until_ms, sent_ms + d.config.lease_ms)
            d.stats.leases_granted += 1
        return
    read = d._reads.pop(rs.request_ctx, None)
    if read is None:
        return
    read.index = rs.index
    d._waiting_reads.append(read)


def release_reads(d: Driver) -> None:
    if d._waiting_reads:
        still = []
        for read in d._waiting_reads:
            if read.index is not None and read.index <= d.applied_index:
                d._answer_read(read)
            else:
                still.append(read)
        d._waiting_reads = still
    if d._leader_reads and d.applied_term == d.term:
        reads, d._leader_reads = d._leader_reads, []
        for read in reads:
            d.submit_read(read.request_id, read.key, Consistency.LEADER)


def answer_read(d: Driver, read: _PendingRead) -> None:
    d._reply(Reply(read.request_id, ReplyStatus.OK, index=d.applied_index,
                      key=read.key))
