"""
The log writer's decisions, as a pure function from events to effects.

`WriterCore` is the part of the log writer (concord.node.log_writer) that decides but
does not act: the writer process owns the WAL and the snapshot files; this decides when
to acknowledge, what to report about the disk and when to retry. The writer and the
simulator's writer (concord.sim.disk.SimLogWriter) feed it the same events:

    on_hello()                      a raft worker connected (True: the first of this life)
    on_persist(number)              a PERSIST request (numbers grow within a worker's life)
    on_batch(number)                the last PERSIST number of a drained batch
    on_flushed(now_s) / on_flush_failed(error, now_s)
                                    the WAL flush of a batch returned / raised
    on_snapshot(meta)               a snapshot is durable: the worker's (SNAPSHOT_TAKEN)
                                    or one installed from the leader

and carry out the effects it returns:

    ReportPersisted(number)  send PERSISTED(number): every PERSIST <= number is durable
    ReportDisk(wal, snap)    send DISK: the disk's health changed

Invariants enforced here:

- PERSISTED(n) is reported only after a flush that returned, never after one that
  failed (durability before acknowledgement), and at most once per number;
- a failed flush keeps everything owed and is retried every RETRY_INTERVAL_S;
- DISK is reported once per change of the disk's health.

When a durable snapshot is due is not the writer's decision any more: the raft worker
forks its own (concord.node.core.snapshots, concord.node.snapshot_fork).

Pure. No IO, no clock, no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass

from concord.errors import RemoteProtocolError
from concord.raft.messages import SnapshotMeta

__all__ = ["RETRY_INTERVAL_S", "ReportDisk", "ReportPersisted", "WriterCore", "WriterEffect"]

#: While the WAL is failing, the writer retries its flush this often.
RETRY_INTERVAL_S = 0.25


@dataclass(frozen=True, slots=True)
class ReportPersisted:
    """Send PERSISTED(number)."""

    number: int


@dataclass(frozen=True, slots=True)
class ReportDisk:
    """Send DISK: an error message per failing path, None where it works."""

    wal_error: str | None
    snapshot_error: str | None


WriterEffect = ReportPersisted | ReportDisk


class WriterCore:
    """
    The log writer's decision state. Not thread-safe.

    Args:
        snapshot: the meta of the snapshot recovered at start, if any.
    """

    def __init__(self, snapshot: SnapshotMeta | None) -> None:
        self.hellos = 0
        self.last_number = 0  # the last PERSIST number received
        self.owed_number = 0  # ... handled (acknowledged once flushed)
        self.persisted_number = 0  # ... acknowledged
        self.wal_error: str | None = None
        self.wal_failed_at_s = 0.0
        self.reported_disk = ReportDisk(None, None)
        self.next_retry_s = 0.0
        self.snapshot_index = snapshot.index if snapshot is not None else 0

    # -- the raft worker's requests ----------------------------------------------------------

    def on_hello(self) -> bool:
        """
        A HELLO. Returns True for the first of this life (answered with what start-up
        recovered); a later one comes from a restarted raft worker, whose PERSIST
        numbering starts afresh.
        """
        self.hellos += 1
        if self.hellos == 1:
            return True
        self.last_number = self.owed_number = self.persisted_number = 0
        return False

    def on_persist(self, number: int) -> None:
        """Raises RemoteProtocolError: `number` is not above the last one."""
        if number <= self.last_number:
            raise RemoteProtocolError(f"persist number {number} is not above {self.last_number}")
        self.last_number = number

    def on_batch(self, number: int | None) -> None:
        """A batch was written to the WAL; `number`: its last PERSIST (None: none)."""
        if number is not None:
            self.owed_number = number

    # -- the WAL flush --------------------------------------------------------------------

    def on_flushed(self, now_s: float) -> tuple[list[WriterEffect], float | None]:
        """
        The flush returned: what was owed is durable.

        Returns:
            The effects, and the outage length in seconds if the WAL was failing.
        """
        effects: list[WriterEffect] = []
        outage: float | None = None
        if self.wal_error is not None:
            outage = now_s - self.wal_failed_at_s
            self.wal_error = None
            effects.extend(self._report_disk())
        if self.owed_number > self.persisted_number:
            self.persisted_number = self.owed_number
            effects.append(ReportPersisted(self.owed_number))
        return effects, outage

    def on_flush_failed(self, error: str, now_s: float) -> tuple[list[WriterEffect], bool]:
        """
        The flush raised: keep what is owed, retry later.

        Returns:
            The effects, and True if the WAL was healthy before (a new outage).
        """
        first = self.wal_error is None
        if first:
            self.wal_failed_at_s = now_s
        self.wal_error = error
        self.next_retry_s = now_s + RETRY_INTERVAL_S
        return self._report_disk(), first

    @property
    def retry_due(self) -> float | None:
        """When the failed flush is to be retried (the caller's seconds), None if healthy."""
        return None if self.wal_error is None else self.next_retry_s

    def _report_disk(self) -> list[WriterEffect]:
        status = ReportDisk(self.wal_error, None)
        if status == self.reported_disk:
            return []
        self.reported_disk = status
        return [status]

    # -- snapshots ------------------------------------------------------------------------

    def on_snapshot(self, meta: SnapshotMeta) -> bool:
        """
        A snapshot at `meta` is durable (the raft worker's, or installed from the leader).

        Returns:
            True if it is newer than every one before: the WAL may be compacted below it.
        """
        if meta.index <= self.snapshot_index:
            return False
        self.snapshot_index = meta.index
        return True
