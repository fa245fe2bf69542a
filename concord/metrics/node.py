"""
What each node process records: small observers its loop calls at a few points.

- the raft worker's observer is `concord.node.raft_metrics.RaftMetrics` (it reads the
  worker, so it lives in the node layer);
- `DoorMetrics`: the front door (every request's op, consistency, result and duration);
- `ReaderMetrics`: each read worker (served and handed-off counts);
- `wal_flushed`, ...: the log writer's WAL; `snapshot_saved`, `snapshot_failed`: the raft
  worker's snapshots; `snapshot_installed`: the log writer's.

Every entry point returns at once while `RECORDER.enabled` is False (metrics off, or a
process that was not set up: tests, benchmarks, the simulator).

Auth refusals are counted by the door's request histogram (its result label); tenant
usage and quotas are sampled by the raft worker (concord/node/raft_metrics.py).
"""

from __future__ import annotations

from concord.metrics.recorder import RECORDER, Histogram

__all__ = [
    "DoorMetrics",
    "ReaderMetrics",
    "reply_result",
    "snapshot_failed",
    "snapshot_installed",
    "snapshot_saved",
    "flush_due",
    "wal_failed",
    "wal_flushed",
]

# -- front door ---------------------------------------------------------------------------------

#: Reply error codes a label may carry (docs/protocol.md); anything else is "other".
_ERROR_CODES = frozenset((
    "not_found", "condition_failed", "not_leader", "no_leader", "timeout", "unauthorized",
    "forbidden", "quota_exceeded", "invalid_request", "invalid_key", "value_too_large",
    "too_many_items", "shutting_down", "storage_unavailable", "compacted",
))


def reply_result(payload: bytes) -> str:
    """
    "ok" or the error code of a wire reply, read from its first bytes.

    Replies are `{"id", "ok", ...}` maps packed in that order (concord.net.wire.ok_reply,
    error_reply): the 3-byte key "ok" is followed by true or false, and an error's "error"
    key by its code as a short string. A reply of another shape is unpacked whole.
    """
    at = payload.find(b"\xa2ok", 0, 24)
    if at >= 0 and at + 3 < len(payload):
        flag = payload[at + 3]
        if flag == 0xC3:
            return "ok"
        if flag == 0xC2:
            err = payload.find(b"\xa5error", at + 4, at + 12)
            if err >= 0 and err + 6 < len(payload):
                head = payload[err + 6]
                if 0xA0 <= head <= 0xBF:
                    code = payload[err + 7: err + 7 + (head - 0xA0)].decode("ascii", "replace")
                    return code if code in _ERROR_CODES else "other"
    return _unpacked_result(payload)


def _unpacked_result(payload: bytes) -> str:
    import msgpack  # noqa: PLC0415 - the rare path

    try:
        reply = msgpack.unpackb(payload)
    except (ValueError, msgpack.UnpackException):
        return "other"
    if not isinstance(reply, dict):
        return "other"
    if reply.get("ok") is True:
        return "ok"
    code = reply.get("error")
    return code if isinstance(code, str) and code in _ERROR_CODES else "other"


#: Who answers a read: the front door itself (inline), a read worker, the raft worker.
SERVED_BY = ("door", "read_worker", "raft_worker")


class DoorMetrics:
    """The front door's metrics (one process; its loop owns it)."""

    def __init__(self) -> None:
        self.on = RECORDER.enabled
        self._stats: dict[str, int] = {}
        self._durations: dict[tuple[str, str, str], Histogram] = {}
        if self.on:
            self._served = {by: RECORDER.counter("concord_server_reads_served_total", by)
                            for by in SERVED_BY}

    def on_done(self, op: str, consistency: str, result: str, duration_s: float,
                served_by: str | None) -> None:
        """
        One request answered: `served_by` is who answered a read (one of SERVED_BY),
        None for anything else.
        """
        if not self.on:
            return
        key = (op, consistency, result)
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = RECORDER.histogram(
                "concord_server_request_duration_seconds", *key)
        child.observe(duration_s)
        if served_by is not None:
            self._served[served_by].add()

    def sample(self, handoffs: int, invalid: int, client_gone: int) -> None:
        """The door's cumulative stats, then a flush when due (called from its loop)."""
        if not self.on:
            return
        for name, total in (("concord_server_read_handoffs_total", handoffs),
                            ("concord_server_invalid_requests_total", invalid),
                            ("concord_server_client_replies_dropped_total", client_gone)):
            last = self._stats.get(name, 0)
            if total > last:
                RECORDER.counter(name).add(total - last)
            self._stats[name] = total
        RECORDER.flush_due()


class ReaderMetrics:
    """One read worker's metrics (label `worker`: its process id, e.g. reader0)."""

    def __init__(self) -> None:
        self.on = RECORDER.enabled
        if self.on:
            worker = RECORDER.process_id
            self._served = RECORDER.counter("concord_read_worker_requests_total", worker, "served")
            self._handed = RECORDER.counter("concord_read_worker_requests_total", worker,
                                            "handed_off")

    def on_round(self, served: int, handed_off: int) -> None:
        """One loop turn handled this many requests; flush when due."""
        if not self.on:
            return
        if served:
            self._served.add(served)
        if handed_off:
            self._handed.add(handed_off)
        RECORDER.flush_due()


# -- log writer ---------------------------------------------------------------------------------


def wal_flushed(write_s: float, sync_s: float | None, nbytes: int, records: int) -> None:
    """One WAL group commit: its write, its fdatasync (None: none), bytes and records."""
    if not RECORDER.enabled:
        return
    RECORDER.histogram("concord_disk_wal_write_duration_seconds").observe(write_s)
    if sync_s is not None:
        RECORDER.histogram("concord_disk_wal_fsync_duration_seconds").observe(sync_s)
    RECORDER.counter("concord_disk_wal_write_bytes_total").add(nbytes)
    RECORDER.histogram("concord_disk_wal_batch_records").observe(records)


def flush_due() -> None:
    """The log writer's loop turn (at least every 200 ms): flush what is due."""
    if RECORDER.enabled:
        RECORDER.flush_due()


def wal_failed() -> None:
    if RECORDER.enabled:
        RECORDER.counter("concord_disk_wal_failures_total").add()
        RECORDER.flush()


def snapshot_saved(duration_s: float, size_bytes: int) -> None:
    if RECORDER.enabled:
        RECORDER.counter("concord_snapshot_saved_total").add()
        RECORDER.histogram("concord_snapshot_save_duration_seconds").observe(duration_s)
        RECORDER.gauge("concord_snapshot_size_bytes").set(size_bytes)
        RECORDER.flush()


def snapshot_installed() -> None:
    if RECORDER.enabled:
        RECORDER.counter("concord_snapshot_installed_total").add()
        RECORDER.flush()


def snapshot_failed() -> None:
    if RECORDER.enabled:
        RECORDER.counter("concord_snapshot_failures_total").add()
        RECORDER.flush()
