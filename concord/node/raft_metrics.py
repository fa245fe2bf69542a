"""
The raft worker's metrics observer (docs/observability.md): status changes, failed
proposals, heartbeat round trips, and a sample of counters and sizes every
SAMPLE_INTERVAL_S from its tick. The other processes' observers are in
concord/metrics/node.py; this one reads the worker, so it lives in the node layer.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from concord.metrics.recorder import RECORDER

if TYPE_CHECKING:
    from concord.node.driver import Reply
    from concord.node.raft_worker import RaftWorker
    from concord.raft.messages import Message

__all__ = ["RaftMetrics"]

#: How often the raft worker samples its counters and sizes (from its tick).
SAMPLE_INTERVAL_S = 0.5
#: How often it measures the data dir on disk (a directory walk and a statvfs).
DISK_INTERVAL_S = 5.0
#: A heartbeat unanswered this long no longer times a round trip (it was lost).
RTT_GIVE_UP_S = 5.0

_HEARTBEAT = 10  # concord.raft.messages.MessageType.HEARTBEAT (not imported: hot path)
_HEARTBEAT_RESP = 11


class RaftMetrics:
    """The raft worker's metrics. Not thread-safe (the worker's loop owns it)."""

    def __init__(self, worker: RaftWorker) -> None:
        self.on = RECORDER.enabled
        self._worker = worker
        self._leader: object = ()  # never a leader id: the first status counts no change
        self._commit = worker.driver.commit
        self._applied = worker.driver.applied_index
        self._peer_stats: dict[str, int] = {}
        self._events_published = 0
        self._events_dropped = 0
        self._heartbeats: dict[str, float] = {}  # follower -> oldest unanswered heartbeat
        self._next_sample = 0.0
        self._next_disk = 0.0
        if self.on:
            self._failed = RECORDER.counter("concord_server_proposals_failed_total")
            self.on_status()

    def on_status(self) -> None:
        """The term, leader or role changed (the worker publishes it to shm)."""
        if not self.on:
            return
        d = self._worker.driver
        leader = d.leader_id
        if leader != self._leader:
            if self._leader != ():
                RECORDER.counter("concord_server_leader_changes_seen_total").add()
            self._leader = leader
        RECORDER.gauge("concord_server_has_leader").set(0 if leader is None else 1)
        RECORDER.gauge("concord_server_is_leader").set(1 if leader == self._worker.node_id else 0)
        RECORDER.gauge("concord_server_term").set(d.term)
        RECORDER.flush()  # rare: the change count is seen together with the gauges

    def on_reply(self, reply: Reply) -> None:
        """A request's reply: dropped and unknown-outcome proposals failed."""
        if self.on and reply.status.value in ("dropped", "unknown"):
            self._failed.add()

    def on_send(self, msg: Message) -> None:
        """A raft message is sent: time the heartbeat round trip."""
        if self.on and msg.type == _HEARTBEAT and msg.to not in self._heartbeats:
            self._heartbeats[msg.to] = time.monotonic()

    def on_message(self, msg: Message) -> None:
        """A raft message arrived: a heartbeat response ends a round trip."""
        if self.on and msg.type == _HEARTBEAT_RESP:
            sent = self._heartbeats.pop(msg.frm, None)
            if sent is not None:
                RECORDER.histogram("concord_network_peer_round_trip_time_seconds",
                                   msg.frm).observe(time.monotonic() - sent)

    def on_tick(self, now: float) -> None:
        """Every tick: sample when due, then flush what is due."""
        if not self.on or now < self._next_sample:
            return
        self._next_sample = now + SAMPLE_INTERVAL_S
        self._sample()
        if now >= self._next_disk:
            self._next_disk = now + DISK_INTERVAL_S
            self._sample_disk()
        for peer, sent in list(self._heartbeats.items()):
            if now - sent > RTT_GIVE_UP_S:
                del self._heartbeats[peer]
        RECORDER.flush_due(now)

    def _sample(self) -> None:
        w = self._worker
        d = w.driver
        commit, applied = d.commit, d.applied_index
        if commit > self._commit:
            RECORDER.counter("concord_server_proposals_committed_total").add(commit - self._commit)
        if applied > self._applied:
            RECORDER.counter("concord_server_proposals_applied_total").add(applied - self._applied)
        self._commit, self._applied = max(self._commit, commit), max(self._applied, applied)
        gauge = RECORDER.gauge
        gauge("concord_server_proposals_pending").set(len(w.pending))
        gauge("concord_server_apply_lag_entries").set(max(0, commit - applied))
        gauge("concord_server_applied_index").set(applied)
        gauge("concord_store_keys").set(len(w.machine.kv))
        stats = w.publisher.stats()
        gauge("concord_shm_used_bytes").set(stats.used_bytes)
        gauge("concord_shm_live_bytes").set(stats.live_bytes)
        gauge("concord_shm_capacity_bytes").set(stats.capacity_bytes)
        peer = w.transport.stats
        self._delta("concord_network_peer_sent_messages_total", "sent", peer.sent)
        self._delta("concord_network_peer_received_messages_total", "received", peer.received)
        self._delta("concord_network_peer_sent_failures_total", "failed",
                    peer.dropped_unreachable + peer.send_errors)
        forward = w.forward.stats
        self._delta("concord_server_forwarded_total", "forwarded", forward.forwarded)
        self._delta("concord_server_forward_abandoned_total", "abandoned", forward.abandoned)
        events = w.events
        self._delta("concord_events_published_total", "published", events.published)
        self._delta("concord_events_dropped_total", "dropped", events.dropped)
        gauge("concord_events_subscribed_prefixes").set(len(events.counters.prefixes()))
        self._sample_auth()

    def _sample_auth(self) -> None:
        """Auth and tenants: refusals are counted by the door (request result labels)."""
        w = self._worker
        state = w.auth.state
        gauge = RECORDER.gauge
        gauge("concord_auth_active").set(1 if state.active else 0)
        gauge("concord_auth_tokens").set(len(state.tokens))
        usage = w.machine.kv.usage
        for tenant, quota in state.tenants.items():
            used = usage.get(tenant)
            gauge("concord_tenant_keys", tenant).set(used.keys if used is not None else 0)
            gauge("concord_tenant_bytes", tenant).set(used.bytes if used is not None else 0)
            gauge("concord_tenant_quota_keys", tenant).set(quota.max_keys)
            gauge("concord_tenant_quota_bytes", tenant).set(quota.max_bytes)

    def _delta(self, name: str, key: str, total: int) -> None:
        """Add what a cumulative in-process count grew by since the last sample."""
        last = self._peer_stats.get(key, 0)
        if total > last:
            RECORDER.counter(name).add(total - last)
        self._peer_stats[key] = total

    def _sample_disk(self) -> None:
        from concord.node.worker_ops import _tree_bytes  # noqa: PLC0415 - the status op's count

        data_dir = Path(self._worker.config.node.data_dir)
        used = _tree_bytes(data_dir)
        RECORDER.gauge("concord_mvcc_db_total_size_in_bytes").set(used)
        try:
            vfs = os.statvfs(data_dir)
        except OSError:
            return
        RECORDER.gauge("concord_server_quota_backend_bytes").set(used + vfs.f_bavail * vfs.f_frsize)
