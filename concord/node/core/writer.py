"""
The log writer's decisions, as a pure function from events to effects.

`WriterCore` is the part of the log writer (concord.node.log_writer) that decides but
does not act: the writer process owns the WAL, the snapshot files and the replica; this
decides when to acknowledge, what to report about the disk, when to retry, whether the
replica may run and when (and with which membership) a snapshot is due. The writer and
the simulator's writer (concord.sim.disk.SimLogWriter) feed it the same events:

    on_hello()                      a raft worker connected (True: the first of this life)
    on_persist(number)              a PERSIST request (numbers grow within a worker's life)
    on_batch(number)                the last PERSIST number of a drained batch
    on_flushed(now_s) / on_flush_failed(error, now_s)
                                    the WAL flush of a batch returned / raised
    on_committed(index, conf_state) the worker's COMMITTED report
    on_installed(meta)              a snapshot from the leader replaced the log
    on_applied(index, term, size)   the replica applied an entry
    snapshot_due()                  the snapshot to start now, if any
    on_snapshot_failed(error) / on_snapshot_written(meta, applied_bytes) / on_snapshot_ok()

and carry out the effects it returns:

    ReportPersisted(number)  send PERSISTED(number): every PERSIST <= number is durable
    ReportDisk(wal, snap)    send DISK: the disk's health changed

Invariants enforced here:

- PERSISTED(n) is reported only after a flush that returned, never after one that
  failed (durability before acknowledgement), and at most once per number;
- a failed flush keeps everything owed and is retried every RETRY_INTERVAL_S;
- DISK is reported once per change of the disk's health;
- a snapshot carries the membership at its index, known exactly only at a COMMITTED
  point (concord.storage.membership); none is taken elsewhere;
- the replica waits until the worker applied an entry committed after the start.

Pure. No IO, no clock, no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass

from concord.errors import RemoteProtocolError
from concord.raft.messages import ConfState, SnapshotMeta
from concord.storage.membership import SnapshotMembership

__all__ = ["RETRY_INTERVAL_S", "ReportDisk", "ReportPersisted", "SnapshotPolicy",
           "WriterCore", "WriterEffect"]

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


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """
    Attributes:
        every_entries: a snapshot every this many applied entries (0: no entry trigger).
        every_bytes: ... or this many bytes of applied entry data (0: no size trigger).
        replica: whether there is a replica to snapshot at all.
    """

    every_entries: int
    every_bytes: int
    replica: bool = True


class WriterCore:
    """
    The log writer's decision state. Not thread-safe.

    Args:
        policy: when snapshots are due.
        snapshot: the meta of the snapshot recovered at start, if any.
        commit: the recovered commit index.
    """

    def __init__(self, policy: SnapshotPolicy, snapshot: SnapshotMeta | None,
                 commit: int) -> None:
        self.policy = policy
        self.membership = SnapshotMembership(snapshot, commit)
        # The replica waits until the worker applied an entry committed after the start.
        self.replica_waits_for = self.membership.commit
        self.worker_applied = 0
        self.hellos = 0
        self.last_number = 0  # the last PERSIST number received
        self.owed_number = 0  # ... handled (acknowledged once flushed)
        self.persisted_number = 0  # ... acknowledged
        self.wal_error: str | None = None
        self.wal_failed_at_s = 0.0
        self.snapshot_error: str | None = None
        self.reported_disk = ReportDisk(None, None)
        self.next_retry_s = 0.0
        self.applied = self.snapshot_index = snapshot.index if snapshot is not None else 0
        self.applied_term = snapshot.term if snapshot is not None else 0
        # Bytes of entry data applied in this life, and their count when the last
        # snapshot (written or installed) was taken: the size trigger.
        self.applied_bytes = 0
        self.snapshot_bytes_mark = 0
        self.next_attempt_index = 0
        self.next_attempt_bytes = 0

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

    def on_committed(self, index: int, conf_state: ConfState | None) -> None:
        self.worker_applied = max(self.worker_applied, index)
        self.membership.committed(index, conf_state)

    @property
    def replica_may_run(self) -> bool:
        """A raft worker's HELLO was answered and it applied an entry committed after the start."""
        return self.hellos > 0 and self.worker_applied > self.replica_waits_for

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
        status = ReportDisk(self.wal_error, self.snapshot_error)
        if status == self.reported_disk:
            return []
        self.reported_disk = status
        return [status]

    # -- the replica and its snapshots ------------------------------------------------------

    def on_installed(self, meta: SnapshotMeta) -> None:
        """A snapshot from the leader replaced the log (and the replica's state)."""
        self.replica_waits_for = -1  # the replica is current from here on
        self.snapshot_bytes_mark = self.applied_bytes
        self.applied = self.snapshot_index = meta.index
        self.applied_term = meta.term
        self.membership.installed(meta)

    def on_applied(self, index: int, term: int, size: int) -> None:
        """The replica applied entries up to (index, term): `size` bytes of entry data."""
        self.applied, self.applied_term = index, term
        self.applied_bytes += size

    def snapshot_due(self) -> SnapshotMeta | None:
        """The snapshot to start now (the caller has none running), or None."""
        every, every_bytes = self.policy.every_entries, self.policy.every_bytes
        if not self.policy.replica or (every == 0 and every_bytes == 0):
            return None
        due_entries = every > 0 and self.applied - self.snapshot_index >= every
        due_bytes = (
            every_bytes > 0
            and self.applied > self.snapshot_index
            and self.applied_bytes - self.snapshot_bytes_mark >= every_bytes
        )
        if not (due_entries or due_bytes):
            return None
        conf_state = self.membership.at(self.applied)
        if conf_state is None:
            return None  # NB: the membership is only known exactly at a COMMITTED point
        if self.applied < self.next_attempt_index and self.applied_bytes < self.next_attempt_bytes:
            return None
        return SnapshotMeta(self.applied, self.applied_term, conf_state)

    def on_snapshot_failed(self, error: str | None) -> list[WriterEffect]:
        """
        A snapshot could not be started (`error` None: not reported as a disk failure)
        or failed: retry once a quarter of either trigger has passed.
        """
        every, every_bytes = self.policy.every_entries, self.policy.every_bytes
        self.next_attempt_index = self.applied + max(1, every // 4 if every else 1 << 62)
        self.next_attempt_bytes = self.applied_bytes + max(
            1, every_bytes // 4 if every_bytes else 1 << 62)
        if error is None:
            return []
        self.snapshot_error = error
        return self._report_disk()

    def on_snapshot_written(self, meta: SnapshotMeta, applied_bytes: int) -> list[WriterEffect]:
        """A snapshot at `meta` is durable; `applied_bytes`: the count when it started."""
        self.snapshot_index = max(self.snapshot_index, meta.index)
        self.snapshot_bytes_mark = max(self.snapshot_bytes_mark, applied_bytes)
        if self.snapshot_error is None:
            return []
        self.snapshot_error = None
        return self._report_disk()
