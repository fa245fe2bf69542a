"""
The effects the node core returns: what the raft worker, the log writer and the
simulator carry out (ra's "effects as data").

Each effect is a frozen dataclass that names one thing to do and carries everything
needed to do it. The core never performs one; it only decides, from the events it is
fed, which are due and in which order. The carriers:

| Effect            | Raft worker (concord.node.raft_worker)     | Simulator (concord.sim.node) |
|-------------------|--------------------------------------------|------------------------------|
| ResyncShm         | Publisher.reset + EventStream.reset        | SimShm.reset                 |
| PublishChanges    | Publisher.publish + EventStream.publish    | SimShm.publish               |
| DropChanges       | discard the machine's collected changes    | same                         |
| PublishStatus     | Publisher.set_status                       | SimShm.set_status            |
| SetLease          | Publisher.set_lease (ns of CLOCK_MONOTONIC)| SimShm.set_lease (checked)   |
| SendReplies       | BackendLink.reply of the queued replies    | (replies go out at once)     |
| SetPeers          | PeerTransport.set_peers                    | ignored (all-to-all network) |
| TakeSnapshot      | SnapshotWriter.start (a forked child)      | SimNode.take_snapshot        |
| ProposeConfChange | Driver.submit_conf_change                  | Driver.submit_conf_change    |
| ProposeAddress    | Driver.submit_write(encode_address(...))   | (not simulated)              |
| ProposeExpiry     | Driver.submit_write(expiry command)        | Driver.submit_write (same)   |
| MintClusterId     | Driver.submit_write(new cluster id)        | (not simulated)              |
| TransferLeader    | Driver.transfer_leader                     | Driver.transfer_leader       |

The log writer's effects (`concord.node.core.writer`) are listed there.

Pure. No IO, no clock, no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass

from concord.ids import NodeId
from concord.raft.messages import ConfChange, SnapshotMeta
from concord.raft.state import Role

__all__ = [
    "DropChanges",
    "Effect",
    "MintClusterId",
    "ProposeConfChange",
    "ProposeExpiry",
    "ProposeAddress",
    "PublishChanges",
    "PublishStatus",
    "ResyncShm",
    "SendReplies",
    "SetLease",
    "SetPeers",
    "TakeSnapshot",
    "TransferLeader",
]


@dataclass(frozen=True, slots=True)
class ResyncShm:
    """
    Publish the whole applied state in one reset and restart the change history. The
    reset is built in steps between the turns of the owner's loop; shared memory holds
    the state before it until the owner reports it published (`NodeCore.on_reset_published`).
    """

    applied_index: int
    first: bool  # the first publish of this incarnation (start-up replay done)


@dataclass(frozen=True, slots=True)
class PublishChanges:
    """Publish the changes collected since the last publish, up to `applied_index`."""

    applied_index: int


@dataclass(frozen=True, slots=True)
class DropChanges:
    """Discard the collected changes: a later ResyncShm publishes their result."""


@dataclass(frozen=True, slots=True)
class PublishStatus:
    """The shm header's raft status (read workers hint with `leader_client`)."""

    term: int
    leader_id: NodeId | None
    role: Role
    leader_client: str | None
    leader_changed: bool  # term, leader or role changed (not only the endpoint): log it


@dataclass(frozen=True, slots=True)
class SetLease:
    """The read lease read workers may serve `leader` reads under (-1: none)."""

    until_ms: int


@dataclass(frozen=True, slots=True)
class SendReplies:
    """
    Send the client replies queued so far (only after their changes are published).

    `shm_current` False: a reset is being built, shared memory holds an older state:
    the replies of writes (and of every leader-only op) wait for its publish, and the
    door's read barriers are answered at the applied index (its view, still behind,
    declines them: the raft worker serves those reads from its own state).
    """

    shm_current: bool = True


@dataclass(frozen=True, slots=True)
class SetPeers:
    """The members the peer transport keeps links to."""

    members: frozenset[NodeId]


@dataclass(frozen=True, slots=True)
class TakeSnapshot:
    """
    Make the state machine's durable snapshot at `meta` (its applied index and membership
    now), then report to NodeCore.on_snapshot_done; `applied_bytes`: the view's count.
    """

    meta: SnapshotMeta
    applied_bytes: int


@dataclass(frozen=True, slots=True)
class ProposeConfChange:
    """Propose a membership change under request id `request_id`."""

    request_id: int
    change: ConfChange
    reason: str  # "promote" (learner auto-promotion) or the client op's name


@dataclass(frozen=True, slots=True)
class ProposeAddress:
    """Propose the address record of `member` (concord.node.members), from the book."""

    request_id: int
    member: NodeId


@dataclass(frozen=True, slots=True)
class ProposeExpiry:
    """Propose the kv's expiry command for cluster time `now_ms`, if it has one."""

    request_id: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class MintClusterId:
    """Propose a newly drawn cluster id (the carrier draws it: randomness is IO)."""

    request_id: int


@dataclass(frozen=True, slots=True)
class TransferLeader:
    """Hand leadership to `to` (TimeoutNow)."""

    to: NodeId
    reason: str


Effect = (
    ResyncShm | PublishChanges | DropChanges | PublishStatus | SetLease | SendReplies
    | SetPeers | TakeSnapshot | ProposeConfChange | ProposeAddress | ProposeExpiry
    | MintClusterId | TransferLeader
)
