"""
The commit-news liveness property, checked once the faults have healed.

A leader sends no message just to announce a new commit index: it rides on the next
APPEND with entries or the next heartbeat (concord/raft/replication.py, bcast_append).
The bound that makes that acceptable, and that docs/architecture.md promises (a
follower's eventual reads and change stream lag the leader by at most about a heartbeat
interval): once the leader has committed index i and knows a live follower holds it
(its match reached i), the follower's commit index reaches i within

    heartbeat_ticks * tick_ms + max_delay_ms + tick_ms

(one heartbeat interval, the network's longest ordinary delivery, and one tick for the
phase of the leader's tick timer). The check runs on the healed cluster right after the
progress write commits, with no client writes left to carry the news: only heartbeats
can. A follower that is paused, crashed or leaves the leader's progress is dropped from
the watch; a change of leader ends it (the new leader's own no-op is told at once).

Pure: time and randomness are the simulator's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concord.ids import NodeId
from concord.raft.state import Role

if TYPE_CHECKING:
    from concord.sim.cluster import Simulation

__all__ = ["WATCH_MS", "bound_ms", "check_commit_news"]

#: How long the check watches for followers to hold the index (catch-up is not its bound).
WATCH_MS = 500


def bound_ms(sim: Simulation) -> int:
    """How long a follower holding a committed entry may go on not knowing it committed."""
    tick_ms = sim.driver_config.tick_ms
    return sim.driver_config.heartbeat_ticks * tick_ms + sim.link_faults.max_delay_ms + tick_ms


def check_commit_news(sim: Simulation) -> None:
    """Fail `commit_news` if a live follower learns the leader's commit index too late."""
    leader = sim.leader()
    if leader is None or leader.raw is None:
        return  # the progress check reports a missing leader
    raft = leader.raw.raft
    index, term, bound = raft.log.committed, raft.term, bound_ms(sim)
    pending = {n for n in raft.tracker.progress if n != leader.id and n in sim.nodes}
    holds_since: dict[NodeId, int] = {}  # when the leader first knew the follower holds it
    failed: list[str] = []

    def watch() -> bool:
        now = sim.loop.now
        if raft.role is not Role.LEADER or raft.term != term or not leader.alive:
            return True  # a new leader: its no-op commit is told at once
        for node_id in sorted(pending):
            node = sim.nodes[node_id]
            pr = raft.tracker.progress.get(node_id)
            if pr is None or not node.alive or node.raw is None or node.frozen():
                pending.discard(node_id)  # not a live follower of this leader any more
                continue
            if node.raw.raft.log.committed >= index:
                pending.discard(node_id)
                continue
            if pr.match >= index:
                since = holds_since.setdefault(node_id, now)
                if now - since > bound:
                    failed.append(
                        f"follower {node_id} holds index {index} (leader {leader.id} term "
                        f"{term} knew it at {since} ms) but its commit is "
                        f"{node.raw.raft.log.committed} at {now} ms, over the {bound} ms bound"
                    )
                    return True
        return not pending

    sim.checker.now_ms = sim.loop.now
    sim.loop.run_until(sim.loop.now + WATCH_MS, stop=lambda: watch() or sim._step_check())
    if failed:
        sim.checker.now_ms = sim.loop.now
        sim.checker.fail("commit_news", failed[0])
