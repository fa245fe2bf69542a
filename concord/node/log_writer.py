"""
The log/snapshot writer process, and the raft worker's client for it (this module
re-exports the pieces of concord/node/logwriter/).

The writer owns `<data_dir>`'s WAL: it recovers it at start, appends what the raft worker
asks it to persist to the WAL with group commit, answers "persisted up to N" only after
the fdatasync covering N has returned, and writes the snapshots the leader installs. It
holds no state machine: the raft worker makes the periodic durable snapshots itself, in a
forked child (concord.node.snapshot_fork), and tells the writer (SNAPSHOT_TAKEN), which
then prunes old snapshot files and deletes the WAL segments the snapshot covers.

The modules (concord/node/logwriter/), one concern each:

    ipc.py     the wire protocol below: message kinds, encoding, the events decoded
    state.py   LogWriter: the WAL and the snapshot files (carries WriterCore out)
    loop.py    serve() and run_log_writer(): the process's poll loop
    client.py  LogWriterClient: the raft worker's side (the driver's LogSink)

and the decisions (when PERSISTED goes out, DISK reports, the retry after a disk
failure) are concord.node.core.writer.WriterCore, which the simulator's writer runs too.

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
DISK with wal_error nil: recovery needs no restart.
"""

from __future__ import annotations

import concord.supervisor_clash  # noqa: F401  (first: names a supervisord clash)
from concord.node.core.writer import RETRY_INTERVAL_S
from concord.node.logwriter.client import LogWriterClient
from concord.node.logwriter.ipc import (
    DISK,
    FAILED,
    HELLO,
    PERSIST,
    PERSISTED,
    PROTOCOL_VERSION,
    READY,
    SNAPSHOT_TAKEN,
    STATS,
    STATS_REPLY,
    STOP,
    TRACE,
    STOPPED,
    DiskStatus,
    Persisted,
    WriterEvent,
    WriterStats,
    _msg,
    _parse,
    decode_event,
    encode_persist,
    encode_recovered,
    encode_snapshot_taken,
)
from concord.node.logwriter.loop import run_log_writer, serve
from concord.node.logwriter.state import (
    SLOW_FLUSH_S,
    LogWriter,
    WriterSettings,
)

__all__ = [
    "DISK", "FAILED", "HELLO",
    "PERSIST", "PERSISTED", "PROTOCOL_VERSION", "READY", "RETRY_INTERVAL_S", "SLOW_FLUSH_S",
    "SNAPSHOT_TAKEN", "STATS", "STATS_REPLY", "STOP", "STOPPED", "DiskStatus", "LogWriter",
    "LogWriterClient", "Persisted", "WriterEvent", "WriterSettings",
    "WriterStats", "_msg", "_parse", "decode_event", "encode_persist",
    "encode_recovered", "encode_snapshot_taken", "run_log_writer", "serve",
]
