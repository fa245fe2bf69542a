"""
Linearizable reads by ReadIndex (Raft thesis §6.4), batched: one heartbeat round confirms
every read request that arrived before the round was sent.

Pure. No IO, no clock, no global randomness; stdlib-only imports.

Requests wait in `unsent` until the core starts a round: on every heartbeat (BEAT), and
before a Ready only while no round is in flight (`can_start_round`), so that the requests
arriving during a round's round trip (the leader's own and every follower's) share the
next round instead of each taking one (etcd's linearizable read loop does the same). A
round that is never acknowledged (a lost heartbeat) leaves the requests after it to the
next heartbeat's round, whose acknowledgement releases it too (`advance`). The
round is tagged with a leader-chosen context (8-byte big-endian round number, so callers'
contexts may collide freely). When a quorum acknowledges round k, every request of rounds
<= k is answered with the commit index recorded when it arrived: rounds are started in
order, so leadership was confirmed after each of those requests arrived.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from concord.ids import NodeId
from concord.raft.messages import Message

_ROUND = struct.Struct(">Q")


@dataclass(slots=True)
class ReadIndexStatus:
    """One pending read: its request and the commit index when it arrived."""

    request: Message
    index: int


@dataclass(slots=True)
class ReadRound:
    """One heartbeat round: the requests it confirms and the acknowledgements seen."""

    requests: list[ReadIndexStatus]
    acks: dict[NodeId, bool] = field(default_factory=dict)


class ReadOnly:
    """Pending ReadIndex requests and rounds of one leader term."""

    __slots__ = ("unsent", "rounds", "next_round")

    def __init__(self) -> None:
        self.unsent: list[ReadIndexStatus] = []
        self.rounds: OrderedDict[bytes, ReadRound] = OrderedDict()
        self.next_round = 1

    def add_request(self, index: int, request: Message) -> None:
        self.unsent.append(ReadIndexStatus(request, index))

    def has_unsent(self) -> bool:
        return bool(self.unsent)

    def can_start_round(self) -> bool:
        """Whether requests wait and no round is in flight (a Ready may start one)."""
        return bool(self.unsent) and not self.rounds

    def take_round(self, leader: NodeId) -> bytes | None:
        """Start a round covering all unsent requests; its context, or None if none."""
        if not self.unsent:
            return None
        ctx = _ROUND.pack(self.next_round)
        self.next_round += 1
        self.rounds[ctx] = ReadRound(self.unsent, {leader: True})
        self.unsent = []
        return ctx

    def recv_ack(self, node_id: NodeId, ctx: bytes) -> dict[NodeId, bool] | None:
        """Record a heartbeat acknowledgement of round `ctx`; the acks so far."""
        read_round = self.rounds.get(ctx)
        if read_round is None:
            return None
        read_round.acks[node_id] = True
        return read_round.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release round `ctx` and every round started before it."""
        if ctx not in self.rounds:
            return []
        released: list[ReadIndexStatus] = []
        while self.rounds:
            head, read_round = self.rounds.popitem(last=False)
            released.extend(read_round.requests)
            if head == ctx:
                break
        return released

    def pending_count(self) -> int:
        return len(self.unsent) + sum(len(r.requests) for r in self.rounds.values())
