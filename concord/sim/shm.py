"""
The shared memory of a simulated node, and the carrier of the node core's effects.

In a real node the supervisor owns the shared-memory segments: they outlive a restart
of the raft worker, and read workers keep serving what they hold. `SimShm` is that
state (the header the node core's effects write: applied index, raft status, read
lease); a simulated crash keeps it half of the time (the raft worker restarted alone)
and starts a fresh one otherwise (the whole node restarted).

`carry_out` performs the node core's effects (concord.node.core.effects) the way the
raft worker does, over the simulator's world, and checks the invariants they must keep:

- `shm_backwards`: shared memory never moves to an older applied index while it lives
  (a restarted worker must catch up before it publishes);
- `lease_publish`: a read lease is published only by a leader whose shared memory
  holds everything it knows committed (read workers serve `leader` reads from it).

A reset (ResyncShm) is published a random while after it began, as the raft worker
builds it in steps between the turns of its loop (SimNode.begin_reset): the node votes,
replicates and applies meanwhile, and nothing else is published until it is.

Pure: time and randomness are the simulator's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from concord.ids import NodeId
from concord.node.core.effects import (
    DropChanges,
    Effect,
    MintClusterId,
    ProposeAddress,
    ProposeConfChange,
    ProposeExpiry,
    PublishChanges,
    PublishStatus,
    ResyncShm,
    SendReplies,
    SetLease,
    SetPeers,
    TakeSnapshot,
    TransferLeader,
)
from concord.raft.state import Role

if TYPE_CHECKING:
    from concord.sim.node import SimNode

__all__ = ["SimShm", "carry_out", "publish"]


@dataclass(slots=True)
class SimShm:
    """What a node's shared-memory header holds (concord/shm/layout.py)."""

    applied_index: int = 0
    lease_until_ms: int = -1
    term: int = 0
    leader_id: NodeId | None = None
    role: Role = Role.FOLLOWER
    publishes: int = 0
    resets: int = 0


def publish(node: SimNode, applied: int) -> None:
    """Shared memory of `node` now holds the state at `applied` (checked: never backwards)."""
    shm = node.shm
    if applied < shm.applied_index:
        node.checker.fail("shm_backwards", f"{node.id} published applied={applied} "
                          f"over applied={shm.applied_index}")
    shm.applied_index = applied


def carry_out(node: SimNode, effects: list[Effect]) -> None:
    """Carry out the node core's effects for `node`, in order, checking as it goes."""
    driver, shm, core = node.driver, node.shm, node.core
    assert driver is not None and core is not None
    for effect in effects:
        match effect:
            case PublishChanges(applied):
                publish(node, applied)
                shm.publishes += 1
            case ResyncShm(applied, _):
                # Built in steps by the raft worker's loop: published a while later
                # (SimNode.begin_reset), the node serving meanwhile.
                node.restored = False
                node.begin_reset(applied)
            case SetLease(until_ms):
                if until_ms >= 0 and (driver.role is not Role.LEADER
                                      or shm.applied_index < driver.commit):
                    node.checker.fail("lease_publish", f"{node.id} published a lease with "
                                      f"shm applied={shm.applied_index} commit={driver.commit} "
                                      f"role={driver.role.name}")
                shm.lease_until_ms = until_ms
            case PublishStatus(term, leader_id, role):
                shm.term, shm.leader_id, shm.role = term, leader_id, role
            case TakeSnapshot():
                node.take_snapshot(effect)
            case ProposeConfChange(rid, change, reason):
                node.trace(f"core {reason} {change.changes[0].node_id} via {node.id}")
                driver.submit_conf_change(rid, change)
            case TransferLeader(to, reason):
                node.trace(f"core transfer {to} via {node.id} reason={reason}")
                driver.transfer_leader(to)
            case ProposeExpiry(rid, now_ms):
                # As the raft worker: the machine's expire or lease_expire command for the
                # keys and leases due at `now_ms`, if any (the register machine has none).
                assert node.machine is not None
                command = node.expiry_command(node.machine, now_ms)
                if command is None:
                    core.on_reply(rid)
                else:
                    node.trace(f"core expiry via {node.id}")
                    driver.submit_write(rid, command)
            case ProposeAddress(rid) | MintClusterId(rid):
                # Not simulated: the simulated state machines hold no member addresses or
                # cluster id. Settled at once, as a proposal nobody waits for.
                core.on_reply(rid)
            case DropChanges() | SendReplies() | SetPeers():
                pass  # nothing collected; replies leave at once; the network is all-to-all
            case _:
                raise AssertionError(f"unhandled node core effect {effect!r}")
