"""
The one table of Concord's Prometheus metrics: name, type, help, labels, writer process.

Everything else is derived from it: the metric objects each process creates
(concord.metrics.recorder), the reference in docs/observability.md (checked by a test),
and the check that the Grafana dashboard and the alert rules name only exported metrics.

Names follow etcd where the meaning is the same (`etcd_server_has_leader` ->
`concord_server_has_leader`), so operators' existing alerts carry over. Counters are
listed with their exposed `_total` name; histograms expose `_bucket`, `_sum`, `_count`.

Pure data: imports nothing but the standard library (the node processes import it
before they set up prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["FAMILIES", "Family", "Kind", "Writer", "exposed_names", "family"]


class Kind(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Writer(enum.Enum):
    """The process that writes a family (its file in the multiprocess directory)."""

    RAFT = "raft"  # raft worker
    WRITER = "writer"  # log writer
    DOOR = "door"  # client front door
    READER = "reader"  # each read worker (label `worker`)


#: Latency buckets (seconds) for fast local operations: fsync, requests, apply.
FAST_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
          0.5, 1.0, 2.5)
#: etcd's peer round-trip buckets (0.0001 s doubling to ~1.6 s).
RTT_S = tuple(0.0001 * 2 ** i for i in range(15))
#: Slow operations: snapshots.
SLOW_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Sizes in records per WAL flush (group commit).
BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # as exposed (counters end in _total)
    kind: Kind
    writer: Writer
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def base(self) -> str:
        """The name prometheus_client is given (counters without `_total`)."""
        if self.kind is Kind.COUNTER and self.name.endswith("_total"):
            return self.name[: -len("_total")]
        return self.name


_R, _W, _D, _E = Writer.RAFT, Writer.WRITER, Writer.DOOR, Writer.READER
_C, _G, _H = Kind.COUNTER, Kind.GAUGE, Kind.HISTOGRAM

FAMILIES: tuple[Family, ...] = (
    # -- consensus (raft worker) --------------------------------------------------------------
    Family("concord_server_has_leader", _G, _R, "1 if this node knows a leader, else 0."),
    Family("concord_server_is_leader", _G, _R, "1 if this node is the leader, else 0."),
    Family("concord_server_term", _G, _R, "The Raft term this node is in."),
    Family("concord_server_leader_changes_seen_total", _C, _R,
           "Times this node saw the leader change (a new leader id, none included)."),
    Family("concord_server_proposals_committed_total", _C, _R,
           "Log entries this node saw committed (its commit index advancing)."),
    Family("concord_server_proposals_applied_total", _C, _R,
           "Log entries this node applied to its state machine."),
    Family("concord_server_proposals_pending", _G, _R,
           "Client requests waiting in the raft worker for a commit or a read index."),
    Family("concord_server_proposals_failed_total", _C, _R,
           "Proposals that failed: dropped (leadership changed) or outcome unknown."),
    Family("concord_server_forwarded_total", _C, _R,
           "Leader-only requests this node relayed to its leader (raft.forward_to_leader)."),
    Family("concord_server_forward_abandoned_total", _C, _R,
           "Relayed requests answered timeout (outcome unknown) here: the leader changed first."),
    Family("concord_server_apply_lag_entries", _G, _R,
           "Committed entries not yet applied (commit index - applied index)."),
    Family("concord_server_applied_index", _G, _R, "This node's applied log index."),
    Family("concord_store_keys", _G, _R, "Live user keys in the store."),
    Family("concord_shm_used_bytes", _G, _R,
           "Bytes of the shared-memory store's live generation in use (records, dead ones "
           "included until compaction)."),
    Family("concord_shm_live_bytes", _G, _R, "Bytes of live records in the shared-memory store."),
    Family("concord_shm_capacity_bytes", _G, _R, "Size of the shared-memory store's generation."),
    Family("concord_mvcc_db_total_size_in_bytes", _G, _R,
           "Bytes on disk under the data dir (WAL segments and snapshots)."),
    Family("concord_server_quota_backend_bytes", _G, _R,
           "The most the data dir can hold: its bytes plus the free bytes of its filesystem."),
    Family("concord_network_peer_round_trip_time_seconds", _H, _R,
           "Heartbeat round trip from the leader to each follower.", ("to",), RTT_S),
    Family("concord_network_peer_sent_messages_total", _C, _R, "Raft messages sent to peers."),
    Family("concord_network_peer_received_messages_total", _C, _R,
           "Raft messages received from peers."),
    Family("concord_network_peer_sent_failures_total", _C, _R,
           "Raft messages dropped on send (peer not connected, queue full, zmq error)."),
    Family("concord_events_published_total", _C, _R, "Change-stream messages published."),
    Family("concord_events_dropped_total", _C, _R,
           "Change-stream messages dropped for a subscriber that could not keep up."),
    Family("concord_events_subscribed_prefixes", _G, _R,
           "Key prefixes with at least one change-stream subscriber."),
    # -- auth and tenants (raft worker, from the replicated auth tables) -------------------------
    Family("concord_auth_active", _G, _R,
           "1 once auth is in force (enabled, or a token exists in the replicated state)."),
    Family("concord_auth_tokens", _G, _R, "Tokens in the replicated auth tables (any state)."),
    Family("concord_tenant_keys", _G, _R, "Keys a tenant stores.", ("tenant",)),
    Family("concord_tenant_bytes", _G, _R,
           "Bytes a tenant stores (key bytes with the tenant prefix + value bytes).", ("tenant",)),
    Family("concord_tenant_quota_keys", _G, _R, "A tenant's key quota (0: unlimited).", ("tenant",)),
    Family("concord_tenant_quota_bytes", _G, _R, "A tenant's byte quota (0: unlimited).",
           ("tenant",)),
    # -- disk (log writer) ----------------------------------------------------------------------
    Family("concord_disk_wal_fsync_duration_seconds", _H, _W,
           "fdatasync of one WAL group commit.", (), FAST_S),
    Family("concord_disk_wal_write_duration_seconds", _H, _W,
           "write(2) of one WAL group commit (before its fdatasync).", (), FAST_S),
    Family("concord_disk_wal_write_bytes_total", _C, _W, "Bytes appended to the WAL."),
    Family("concord_disk_wal_batch_records", _H, _W,
           "Records (entries and hard states) per WAL group commit.", (), BATCH),
    Family("concord_disk_wal_failures_total", _C, _W, "WAL writes or fdatasyncs that failed."),
    Family("concord_snapshot_saved_total", _C, _R,
           "Snapshots written (by the raft worker's forked child)."),
    Family("concord_snapshot_save_duration_seconds", _H, _R,
           "From the snapshot's start (fork) to its file being durable.", (), SLOW_S),
    Family("concord_snapshot_size_bytes", _G, _R, "Size of the newest snapshot file."),
    Family("concord_snapshot_installed_total", _C, _W,
           "Snapshots received from the leader and installed."),
    Family("concord_snapshot_failures_total", _C, _R,
           "Snapshots that failed (the child failed or was killed)."),
    # -- client requests (front door) -----------------------------------------------------------
    Family("concord_server_request_duration_seconds", _H, _D,
           "Client requests, from the front door's receive to its reply, by op, "
           "consistency and result (ok or the error code).",
           ("op", "consistency", "result"), FAST_S),
    Family("concord_server_reads_served_total", _C, _D,
           "Read requests answered, by who answered (door, read_worker, raft_worker).",
           ("by",)),
    Family("concord_server_read_handoffs_total", _C, _D,
           "Reads a read worker handed to the raft worker (leader read without a lease)."),
    Family("concord_server_invalid_requests_total", _C, _D,
           "Requests refused as invalid_request before routing."),
    Family("concord_server_client_replies_dropped_total", _C, _D,
           "Replies dropped because the client was gone or not reading."),
    # -- read workers ---------------------------------------------------------------------------
    Family("concord_read_worker_requests_total", _C, _E,
           "Requests a read worker handled, by worker and outcome (served, handed_off).",
           ("worker", "outcome")),
)

_BY_NAME = {f.name: f for f in FAMILIES}
if len(_BY_NAME) != len(FAMILIES):  # pragma: no cover - a table typo
    raise AssertionError("duplicate metric family name")


def family(name: str) -> Family:
    """The family called `name` (KeyError if none)."""
    return _BY_NAME[name]


def exposed_names() -> frozenset[str]:
    """Every sample name a node exports (histograms with _bucket, _sum, _count)."""
    names: set[str] = set()
    for f in FAMILIES:
        if f.kind is Kind.HISTOGRAM:
            names.update(f"{f.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(f.name)
    return frozenset(names)
