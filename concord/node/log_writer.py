"""
The log/snapshot writer process, and the raft worker's client for it (this module
re-exports the pieces of concord/node/logwriter/).

The writer owns `<data_dir>`: it recovers it at start, appends what the raft worker asks
it to persist to the WAL with group commit, answers "persisted up to N" only after the
fdatasync covering N has returned, keeps a replica of the state machine by applying
committed entries (`concord.storage.replica.apply_entry`, the raft worker's code), and
writes a snapshot every `snapshot_entries` applied entries or `snapshot_bytes` bytes of
applied entry data, whichever comes first, without stalling the WAL path (the replica is
serialized in a forked child; see WriterSettings.snapshot_mode).

Start-up order matters for restart time: the writer answers the raft worker's HELLO
first, and restores its own replica from the snapshot and applies the recovered log only
once the worker reported (COMMITTED) applying an entry committed after the start (the
cluster is serving again: a leader committed at least its no-op), so neither this
worker's start-up (restore, replay, shared-memory publish) nor the election, nor on a
shared host the other members' start-up, competes with the replica for the CPU. The
replica only feeds snapshots; it may lag.

The modules (concord/node/logwriter/), one concern each:

    ipc.py     the wire protocol below: message kinds, encoding, the events decoded
    state.py   LogWriter: the WAL, the replica, snapshot jobs (carries WriterCore out)
    loop.py    serve() and run_log_writer(): the process's poll loop
    client.py  LogWriterClient: the raft worker's side (the driver's LogSink)

and the decisions (when PERSISTED goes out, DISK reports, the retry after a disk
failure, when the replica may run, when a snapshot is due and with which membership)
are concord.node.core.writer.WriterCore, which the simulator's writer runs too.

The wire protocol between the raft worker and the writer (ZeroMQ PAIR over ipc, one
msgpack array per message, every kind and its fields) is documented once, in
concord/node/logwriter/ipc.py.

Durability rule: PERSISTED(n) leaves only after the WAL flush holding every
request <= n returned, including its fdatasync whenever any of them had must_sync set or
carried entries or a snapshot. A batch of commit-only hard-state updates (must_sync
false, the Raft rule for "only the commit index moved") is written but not synced.

A failing disk (ENOSPC, EIO on a WAL write or fdatasync) does not stop the writer: the
batch stays in memory, unacknowledged (no PERSISTED), the writer reports DISK with the
error, and retries every RETRY_INTERVAL_S; WAL.flush seals the segment that failed at its
last durable offset and rewrites the batch into a fresh segment (fsyncgate: a failed
fdatasync is never retried on the same file; see WAL._seal_failed_segment). Requests that
arrive meanwhile join the batch. The first successful flush sends the PERSISTED owed and
DISK with wal_error nil: recovery needs no restart. A failed snapshot write is retried
later (the WAL keeps everything meanwhile) and reported the same way.
"""

from __future__ import annotations

import concord.supervisor_clash  # noqa: F401  (first: names a supervisord clash)
from concord.node.core.writer import RETRY_INTERVAL_S
from concord.node.logwriter.client import LogWriterClient
from concord.node.logwriter.ipc import (
    COMMITTED,
    DISK,
    FAILED,
    HELLO,
    PERSIST,
    PERSISTED,
    PROTOCOL_VERSION,
    READY,
    SNAPSHOT_WRITTEN,
    STATS,
    STATS_REPLY,
    STOP,
    TRACE,
    STOPPED,
    DiskStatus,
    Persisted,
    SnapshotWritten,
    WriterEvent,
    WriterStats,
    _msg,
    _parse,
    decode_event,
    encode_persist,
    encode_recovered,
)
from concord.node.logwriter.loop import run_log_writer, serve
from concord.node.logwriter.state import (
    APPLY_SLICE_BUSY,
    APPLY_SLICE_BUSY_BYTES,
    APPLY_SLICE_IDLE,
    APPLY_SLICE_IDLE_BYTES,
    DEFAULT_SNAPSHOT_BYTES,
    DEFAULT_STATE_MACHINE,
    SLOW_FLUSH_S,
    LogWriter,
    WriterSettings,
    _die_with_parent,
)

__all__ = [
    "APPLY_SLICE_BUSY", "APPLY_SLICE_BUSY_BYTES", "APPLY_SLICE_IDLE", "APPLY_SLICE_IDLE_BYTES",
    "COMMITTED", "DEFAULT_SNAPSHOT_BYTES", "DEFAULT_STATE_MACHINE", "DISK", "FAILED", "HELLO",
    "PERSIST", "PERSISTED", "PROTOCOL_VERSION", "READY", "RETRY_INTERVAL_S", "SLOW_FLUSH_S",
    "SNAPSHOT_WRITTEN", "STATS", "STATS_REPLY", "STOP", "STOPPED", "DiskStatus", "LogWriter",
    "LogWriterClient", "Persisted", "SnapshotWritten", "WriterEvent", "WriterSettings",
    "WriterStats", "_die_with_parent", "_msg", "_parse", "decode_event", "encode_persist",
    "encode_recovered", "run_log_writer", "serve",
]
