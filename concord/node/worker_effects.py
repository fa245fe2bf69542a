"""
The raft worker's effects: carrying out what the node core decides
(concord.node.core.effects), in order: sending replies, publishing changes to shared
memory and the change stream, durable snapshots, the read lease and status, peer sets, conf changes and other proposals, and resyncing shared memory.

Methods of `concord.node.raft_worker.RaftWorker`, kept here by concern: each function
takes the worker as `worker` and is bound in the class body.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from concord.auth.state import AUTH_PREFIX
from concord.kv.record import Space
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
from concord.node.members import encode_address, encode_cluster_id, new_cluster_id

if TYPE_CHECKING:
    from concord.node.raft_worker import RaftWorker


def carry_out(worker: RaftWorker, effects: list[Effect]) -> None:
    """Carry out the node core's effects, in order (concord.node.core.effects)."""
    for effect in effects:
        match effect:
            case SendReplies():
                local: list[tuple[int, bytes]] = []
                forwarded: list[tuple[int, bytes]] = []
                for token, payload in worker._outbox:
                    # A negative token: a follower's forwarded request (concord.node.forward).
                    (forwarded if token < 0 else local).append((token, payload))
                worker._outbox.clear()
                if local:  # the round's replies, in one message to the door (or direct)
                    worker.reply_clients(local)
                if forwarded:  # and in one message to each follower
                    worker.forward.reply_many(forwarded)
                # The door's read barriers whose index shared memory reached (published
                # above: PublishChanges / ResyncShm come before SendReplies); while a
                # reset is built, at the applied index: the door's view declines those
                # it is behind, and this worker serves them from its state machine.
                worker.barriers.send(worker.link, worker.publisher.applied_index
                                     if effect.shm_current else worker.driver.applied_index)
            case PublishChanges():
                worker._publish_changes()
            case SetLease(until_ms):
                # NB: the driver's lease is on the monotonic timer already (the read
                # workers compare it with time.monotonic_ns() too): never the wall clock.
                worker.publisher.set_lease(0 if until_ms < 0 else until_ms * 1_000_000)
            case PublishStatus():
                if effect.leader_changed:
                    worker.log.info("raft status changed leader=%s", effect.leader_id)
                worker.publisher.set_status(effect.term, effect.leader_id, effect.role,
                                          effect.leader_client)
                worker.metrics.on_status()
            case SetPeers(members):
                worker.transport.set_peers(
                    {p: e for p, e in worker.book.peer_endpoints().items() if p in members})
            case _:
                worker._carry_out_rare(effect)


def carry_out_rare(worker: RaftWorker, effect: Effect) -> None:
    """The effects of ticks, requests and restarts (not of every round)."""
    match effect:
        case ResyncShm(_, first):
            worker._resync_shm(first)
        case TakeSnapshot():
            worker._take_snapshot(effect)
        case DropChanges():
            worker.machine.changes.clear()  # the coming reset publishes them
        case ProposeConfChange(rid, change, reason):
            if reason == "promote":
                member = change.changes[0].node_id
                progress = worker.raw.status().progress.get(member)
                worker.log.info("promoting learner member=%s match=%d", member,
                              progress.match if progress is not None else 0)
            worker.driver.submit_conf_change(rid, change)
        case ProposeAddress(rid, member):
            address = worker.book.get(member)
            assert address is not None  # Invariant: set in the book before add_member
            worker.driver.submit_write(rid, encode_address(address))
        case ProposeExpiry(rid, now_ms):
            command = worker.machine.kv.expiry_command(now_ms)
            if command is None:
                worker.core.on_reply(rid)  # nothing to expire: no proposal in flight
            else:
                worker.driver.submit_write(rid, command)
        case MintClusterId(rid):
            cluster_id = new_cluster_id()
            worker.log.info("proposing cluster id cluster_id=%s", cluster_id)
            worker.driver.submit_write(rid, encode_cluster_id(cluster_id))
        case TransferLeader(to, reason):
            worker.driver.transfer_leader(to)
            worker.log.info("leadership transfer requested to=%s reason=%s", to, reason)
        case _:
            raise AssertionError(f"unhandled node core effect {effect!r}")


def publish_changes(worker: RaftWorker) -> None:
    machine = worker.machine
    kv = machine.kv
    changes, machine.changes = machine.changes, []
    worker.publisher.publish(changes, kv.applied_index, kv.revision, kv.last_ts_ms)
    worker.events.publish(changes)
    if any(c.space == Space.SYSTEM and c.key.startswith(AUTH_PREFIX) for c in changes):
        worker._rebind_events("auth tables changed")


def resync_shm(worker: RaftWorker, first: bool) -> None:
    """
    Begin publishing the whole state to shared memory as one reset, built in steps by
    the worker's loop (`step_reset`), and restart the change stream's history at its
    revision (NodeCore decided it may: the state caught up with shm and with the
    start-up replay). A subscriber asking for an earlier revision gets `compacted`,
    never a gap. Replies queued before it wait for its publish (the writes among them
    must be readable here once acknowledged).
    """
    machine = worker.machine
    kv = machine.kv
    started, started_cpu = time.monotonic(), time.process_time()
    worker.publisher.begin_reset([(Space.USER, kv.records()), (Space.SYSTEM, kv.system_records())],
                                 kv.applied_index, kv.revision, kv.last_ts_ms)
    machine.changes.clear()
    machine.restored = False
    worker.events.reset(kv.revision)
    worker.held_replies.extend(worker._outbox)
    worker._outbox.clear()
    worker.reset_started = (started, first)
    worker.reset_cpu_s = time.process_time() - started_cpu


def step_reset(worker: RaftWorker, budget_s: float) -> None:
    """
    Advance the reset being built by about `budget_s` of work; once it is published,
    tell the node core, release the replies held for it and publish what was applied
    meanwhile (a round of `after_ready`).
    """
    cpu = time.process_time()
    published = worker.publisher.reset_step(budget_s)
    worker.reset_cpu_s += time.process_time() - cpu
    if not published:
        return
    worker.core.on_reset_published()
    worker._outbox.extend(worker.held_replies)
    worker.held_replies.clear()
    started, first = worker.reset_started
    if first:
        kv = worker.machine.kv
        # Wall times swing with the host's load; the CPU times (this process's, since
        # its start: interpreter and imports, restore, replay, the steps of the publish
        # and everything else the loop did meanwhile) do not.
        worker.log.info(
            "start-up state published applied=%d keys=%d restore_s=%.3f replay_s=%.3f "
            "shm_publish_s=%.3f total_s=%.3f shm_publish_cpu_s=%.3f cpu_s=%.3f",
            worker.publisher.applied_index, len(kv), worker._restored_s,
            started - worker._run_started_s, time.monotonic() - started,
            time.monotonic() - worker._started_s, worker.reset_cpu_s, time.process_time(),
        )
    worker._after_ready()
