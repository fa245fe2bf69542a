"""The log writer: group commit and acknowledgement order, replica snapshots, the client."""

from __future__ import annotations

import errno
import logging
import os
import signal
from pathlib import Path

import pytest
import zmq

from concord.storage import codec
from concord.errors import ProtocolError
from concord.ids import NodeId
from concord.node import log_writer as lw
from concord.raft.messages import ConfState, Entry, EntryType, Snapshot, SnapshotMeta
from concord.raft.state import HardState
from concord.storage.recovery import recover
from concord.storage.replica import ReplicaChecker, apply_entry, check_replica_hash
from concord.storage.snapshot import list_snapshots
from tests.storage.fake_sm import DictMachine
from tests.storage.util import make_entries, writer_process

CS = ConfState(voters=(NodeId("n1"), NodeId("n2"), NodeId("n3")))


def _put_entries(first: int, count: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, f"k{i % 7}=v{i}".encode(), 1000 + i) for i in range(first, first + count)]


def _persist(number: int, entries: list[Entry], hs: HardState | None = None, must_sync: bool = True) -> bytes:
    return lw.encode_persist(number, entries, hs, None, must_sync)


def _committed(index: int) -> bytes:
    return lw._msg(lw.COMMITTED, index, codec.conf_state_to_obj(CS))


def test_writer_group_commits_and_acks_after_sync_when_requests_are_drained_together(tmp_path: Path) -> None:
    """N queued PERSIST requests: one write, one fdatasync, then one PERSISTED(N)."""
    syncs: list[int] = []
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(replica=False), sync_hook=lambda fd: syncs.append(len(writer.outbox)))
    frames = [_persist(n, make_entries(n, 1)) for n in range(1, 51)]
    assert writer.handle_batch(frames)
    assert [0] == syncs  # the sync happened before any reply was queued
    assert [lw._msg(lw.PERSISTED, 50)] == writer.outbox
    assert (1, 1) == (writer.wal.write_count, writer.wal.sync_count)
    writer.close()
    assert make_entries(1, 50) == recover(tmp_path).entries


def test_writer_skips_fdatasync_when_batch_only_moves_commit(tmp_path: Path) -> None:
    """must_sync false with no entries (commit-only hard state) is written, not synced."""
    syncs: list[int] = []
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(replica=False), sync_hook=syncs.append)
    writer.handle_batch([_persist(1, [], HardState(1, None, 3), must_sync=False)])
    writer.handle_batch([_persist(2, make_entries(1, 1), None, must_sync=False)])
    assert 1 == len(syncs)
    writer.close()
    assert HardState(1, None, 3) == recover(tmp_path).hard_state


def test_writer_rejects_request_when_persist_number_does_not_grow(tmp_path: Path) -> None:
    """Persist numbers are monotonic; a repeat is a protocol error."""
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(replica=False))
    writer.handle_batch([_persist(1, make_entries(1, 1))])
    with pytest.raises(ProtocolError, match="persist number 1 is not above 1"):
        writer.handle_batch([_persist(1, make_entries(2, 1))])
    writer.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fork", "thread"])
def test_writer_writes_snapshot_from_its_replica_when_enough_entries_are_applied(tmp_path: Path, mode: str) -> None:
    """Every snapshot_entries applied, a snapshot with the replica's hash is written and reported."""
    settings = lw.WriterSettings(snapshot_entries=20, snapshot_mode=mode, segment_bytes=600)
    writer = lw.LogWriter(tmp_path, settings, state_machine=DictMachine)
    entries = _put_entries(1, 30, term=2)
    for n, first in enumerate(range(1, 31, 5), start=1):
        writer.handle_batch([_persist(n, entries[first - 1 : first + 4], HardState(2, NodeId("n1"), first + 4))])
    segments_before = len(writer.wal.segments)
    writer.handle_batch([_committed(25)])
    writer.outbox.clear()
    writer.apply_some()
    assert 25 == writer.applied_index
    assert writer.snapshot_job is not None
    assert writer.poll_snapshot(block=True)
    expected = DictMachine()
    for e in entries[:25]:
        apply_entry(expected, e)
    path = str(tmp_path / "snap" / "0000000000000019-0000000000000002.snap")
    assert [lw._msg(lw.SNAPSHOT_WRITTEN, 25, 2, codec.conf_state_to_obj(CS), expected.state_hash(), path)] == writer.outbox
    assert len(writer.wal.segments) < segments_before
    writer.close()
    state = recover(tmp_path)
    assert state.snapshot is not None
    assert SnapshotMeta(25, 2, CS) == state.snapshot.meta
    assert expected.snapshot() == state.snapshot.data
    assert entries[25:] == state.entries


def test_writer_installs_leader_snapshot_when_persist_carries_one(tmp_path: Path) -> None:
    """A snapshot from the leader is written, marked in the WAL and restores the replica."""
    source = DictMachine()
    for e in _put_entries(1, 40):
        apply_entry(source, e)
    snap = Snapshot(SnapshotMeta(40, 3, CS), source.snapshot())
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(snapshot_entries=0), state_machine=DictMachine)
    writer.handle_batch([_persist(1, _put_entries(1, 5))])
    writer.handle_batch([lw.encode_persist(2, _put_entries(41, 2, term=3), HardState(3, None, 40), snap, True)])
    assert 40 == writer.applied_index
    writer.close()
    state = recover(tmp_path)
    assert snap == state.snapshot
    assert _put_entries(41, 2, term=3) == state.entries


def test_writer_replicates_the_kv_state_machine_when_no_machine_is_configured(tmp_path: Path) -> None:
    """By default the replica is concord.kv's KvStateMachine; its snapshot matches a direct apply."""
    from concord.kv import KvStateMachine, encode_command

    entries = [Entry(1, 1, EntryType.NORMAL, b"", 1000)] + [
        Entry(1, i, EntryType.NORMAL, encode_command("put", {"key": f"k{i % 5}", "value": i}), 1000 + i)
        for i in range(2, 13)
    ]
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(snapshot_entries=12))
    writer.handle_batch([_persist(1, entries), _committed(12)])
    writer.outbox.clear()
    writer.apply_some()
    assert writer.poll_snapshot(block=True)
    expected = KvStateMachine()
    for e in entries:
        apply_entry(expected, e)
    path = str(tmp_path / "snap" / "000000000000000c-0000000000000001.snap")
    assert [lw._msg(lw.SNAPSHOT_WRITTEN, 12, 1, codec.conf_state_to_obj(CS), expected.state_hash(), path)] == writer.outbox
    writer.close()
    state = recover(tmp_path)
    assert state.snapshot is not None
    restored = KvStateMachine()
    restored.restore(state.snapshot.data)
    assert expected.state_hash() == restored.state_hash()


def test_replica_checker_compares_recorded_hash_when_writer_reports_a_snapshot(caplog: pytest.LogCaptureFixture) -> None:
    """The worker's hash recorded at index I is compared with the writer's at I; unknown I gives None."""
    checker = ReplicaChecker(capacity=3)
    for index in range(1, 6):
        checker.record(index, index * 11)
    assert checker.check(1, 11) is None  # evicted: only the last 3 are kept
    assert checker.check(4, 44)
    with caplog.at_level(logging.ERROR):
        assert checker.check(5, 99) is False
    assert 1 == checker.mismatches
    assert "index=5 worker_hash=0x0000000000000037 writer_hash=0x0000000000000063" in caplog.text


def test_replica_check_logs_error_when_hashes_differ(caplog: pytest.LogCaptureFixture) -> None:
    """A hash mismatch is an ERROR naming both hashes and the index, and returns False."""
    with caplog.at_level(logging.ERROR):
        assert check_replica_hash(17, 0xABC, 0xABC)
        assert [] == caplog.records
        assert not check_replica_hash(17, 0xABC, 0xDEF)
    (record,) = caplog.records
    assert logging.ERROR == record.levelno
    assert "index=17 worker_hash=0x0000000000000abc writer_hash=0x0000000000000def" in record.getMessage()


# --- processes ------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_writer_process_acks_snapshots_and_stops_when_driven_by_the_client(tmp_path: Path, short_dir: Path) -> None:
    """Over ipc: handshake, persist, acks, snapshot notice, stats, graceful stop."""
    endpoint = f"ipc://{short_dir}/w.sock"
    settings = lw.WriterSettings(snapshot_entries=10, state_machine="tests.storage.fake_sm:DictMachine")
    ctx = zmq.Context()
    client = lw.LogWriterClient(endpoint, ctx)
    try:
        with writer_process(tmp_path, endpoint, settings) as proc:
            recovered = client.handshake(20)
            assert ([], HardState(), None) == (recovered.entries, recovered.hard_state, recovered.snapshot)
            entries = _put_entries(1, 12)
            for n in range(1, 13):
                client.persist(n, entries[n - 1 : n], HardState(1, NodeId("n1"), n), None, True)
            events: list[lw.WriterEvent] = []
            while lw.Persisted(12) not in events:
                events += client.recv(timeout_ms=5000)
            numbers = [e.number for e in events if isinstance(e, lw.Persisted)]
            assert sorted(numbers) == numbers
            client.committed(12, CS)
            while not any(isinstance(e, lw.SnapshotWritten) for e in events):
                events += client.recv(timeout_ms=5000)
            expected = DictMachine()
            for e in entries:
                apply_entry(expected, e)
            (notice,) = [e for e in events if isinstance(e, lw.SnapshotWritten)]
            assert (12, 1, CS, expected.state_hash()) == (notice.index, notice.term, notice.conf_state, notice.state_hash)
            assert Snapshot(SnapshotMeta(12, 1, CS), expected.snapshot()) == notice.load()
            client.request_stats()
            stats = [e for e in client.recv(timeout_ms=5000) if isinstance(e, lw.WriterStats)]
            assert 12 == stats[0].values["applied_index"]
            assert stats[0].values["syncs"] <= 12
            client.stop()
            proc.join(10)
            assert 0 == proc.exitcode
    finally:
        client.close()
        ctx.term()
    assert 1 == len(list_snapshots(tmp_path / "snap"))



@pytest.mark.integration
@pytest.mark.slow
def test_writer_process_exits_nonzero_when_the_wal_is_corrupt(tmp_path: Path, short_dir: Path) -> None:
    """Corruption found at start-up stops the writer (exit 1) and the client is told nothing is ready."""
    from tests.storage.util import open_wal

    wal = open_wal(tmp_path)
    for first in (1, 4, 7):
        wal.append_entries(make_entries(first, 3))
        wal.flush()
    wal.close()
    seg = wal.segments[0].path
    data = bytearray(seg.read_bytes())
    data[60] ^= 0xFF
    seg.write_bytes(bytes(data))
    endpoint = f"ipc://{short_dir}/w.sock"
    with writer_process(tmp_path, endpoint, lw.WriterSettings(replica=False)) as proc:
        proc.join(20)
        assert 1 == proc.exitcode
    assert bytes(data) == seg.read_bytes()


@pytest.mark.integration
@pytest.mark.slow
def test_writer_process_exits_cleanly_when_sent_sigterm(tmp_path: Path, short_dir: Path) -> None:
    """SIGTERM is a graceful stop: exit 0, everything acknowledged is on disk."""
    endpoint = f"ipc://{short_dir}/w.sock"
    ctx = zmq.Context()
    client = lw.LogWriterClient(endpoint, ctx)
    try:
        with writer_process(tmp_path, endpoint, lw.WriterSettings(replica=False)) as proc:
            client.handshake(20)
            client.persist(1, make_entries(1, 5), HardState(1, NodeId("n1"), 0), None, True)
            assert [lw.Persisted(1)] == client.recv(timeout_ms=10_000)
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGTERM)
            proc.join(10)
            assert 0 == proc.exitcode
    finally:
        client.close()
        ctx.term()
    assert make_entries(1, 5) == recover(tmp_path).entries


def test_writer_rejects_persist_when_entries_leave_a_gap(tmp_path: Path) -> None:
    """Entries must continue the log (or rewrite a suffix); a gap is a protocol error, nothing is written."""
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(replica=False))
    writer.handle_batch([_persist(1, make_entries(1, 3))])
    with pytest.raises(ProtocolError, match="persist appends index 5 but the log ends at 3"):
        writer.handle_batch([_persist(2, make_entries(5, 1))])
    bad_run = make_entries(4, 1) + make_entries(6, 1)
    with pytest.raises(ProtocolError, match="entry index 6 follows 4"):
        writer.handle_batch([_persist(3, bad_run)])
    writer.close()
    assert make_entries(1, 3) == recover(tmp_path).entries


def test_writer_keeps_writing_and_retries_snapshot_later_when_fork_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """fork() failing (e.g. ENOMEM) is a WARNING and a later retry, never a stop of the WAL path."""

    def no_fork() -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", no_fork)
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(snapshot_entries=8), state_machine=DictMachine)
    with caplog.at_level(logging.WARNING):
        writer.handle_batch([_persist(1, _put_entries(1, 8)), _committed(8)])
        writer.apply_some()
    assert writer.snapshot_job is None
    assert "cannot start snapshot, will retry index=8 retry_at=10" in caplog.text
    writer.handle_batch([_persist(2, _put_entries(9, 1)), _committed(9)])
    writer.apply_some()
    assert writer.snapshot_job is None
    monkeypatch.undo()
    writer.handle_batch([_persist(3, _put_entries(10, 1)), _committed(10)])
    writer.apply_some()
    assert writer.snapshot_job is not None
    assert writer.poll_snapshot(block=True)
    writer.close()
    state = recover(tmp_path)
    assert state.snapshot is not None and 10 == state.snapshot.meta.index


@pytest.mark.integration
@pytest.mark.slow
def test_client_raises_and_writer_exits_when_worker_sends_a_bad_request(tmp_path: Path, short_dir: Path) -> None:
    """A request that breaks the protocol gets FAILED (StorageError at the client) and exit 1."""
    from concord.errors import StorageError

    endpoint = f"ipc://{short_dir}/w.sock"
    ctx = zmq.Context()
    client = lw.LogWriterClient(endpoint, ctx)
    try:
        with writer_process(tmp_path, endpoint, lw.WriterSettings(replica=False)) as proc:
            client.handshake(20)
            client.persist(1, make_entries(3, 1), None, None, True)  # index 3 on an empty log: a gap
            with pytest.raises(StorageError, match="log writer failed: persist appends index 3 but the log ends at 0"):
                client.recv(timeout_ms=10_000)
            proc.join(10)
            assert 1 == proc.exitcode
    finally:
        client.close()
        ctx.term()


def test_writer_waits_for_a_membership_before_snapshotting_when_committed_omits_it(tmp_path: Path) -> None:
    """COMMITTED without conf_state means unchanged; no snapshot until one was ever given."""
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(snapshot_entries=5, snapshot_mode="thread"), state_machine=DictMachine)
    writer.handle_batch([_persist(1, _put_entries(1, 12)), lw._msg(lw.COMMITTED, 6, None)])
    writer.apply_some()
    assert (6, None) == (writer.applied_index, writer.snapshot_job)
    writer.handle_batch([_committed(8), lw._msg(lw.COMMITTED, 10, None)])
    writer.apply_some()
    assert writer.snapshot_job is not None and SnapshotMeta(10, 1, CS) == writer.snapshot_job.meta
    assert writer.poll_snapshot(block=True)
    writer.close()


def test_writer_retries_later_and_cleans_up_when_a_snapshot_fails(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A failed snapshot (here: the state machine raises) is a WARNING, no temp file, a later retry."""

    class Flaky(DictMachine):
        fail = True

        def snapshot(self) -> bytes:
            if Flaky.fail:
                raise RuntimeError("disk full, say")
            return super().snapshot()

    writer = lw.LogWriter(tmp_path, lw.WriterSettings(snapshot_entries=8), state_machine=Flaky)
    writer.handle_batch([_persist(1, _put_entries(1, 12)), _committed(8)])
    writer.apply_some()
    with caplog.at_level(logging.WARNING):
        assert writer.poll_snapshot(block=True)
    assert "snapshot failed, will retry index=8 retry_at=10 error=RuntimeError: disk full, say" in caplog.text
    assert [] == list((tmp_path / "snap").glob("*"))
    Flaky.fail = False
    writer.handle_batch([_committed(9)])
    writer.apply_some()
    assert writer.snapshot_job is None
    writer.handle_batch([_committed(10)])
    writer.apply_some()
    assert writer.poll_snapshot(block=True)
    writer.close()
    assert [10] == [i for i, _, _ in list_snapshots(tmp_path / "snap")]


def _big_entries(first: int, count: int, data_bytes: int) -> list[Entry]:
    return [Entry(1, i, EntryType.NORMAL, f"k{i}=".encode() + b"v" * data_bytes, 1000 + i)
            for i in range(first, first + count)]


@pytest.mark.slow
def test_writer_writes_snapshot_when_applied_entry_bytes_reach_snapshot_bytes(tmp_path: Path) -> None:
    """Few but large entries (bulk writes): the size trigger takes the snapshot."""
    settings = lw.WriterSettings(snapshot_entries=1000, snapshot_bytes=10_000, snapshot_mode="thread")
    writer = lw.LogWriter(tmp_path, settings, state_machine=DictMachine)
    writer.handle_batch([_persist(1, _big_entries(1, 4, 2_000)), _committed(4)])
    writer.apply_some()
    assert writer.snapshot_job is None  # 8,000 bytes: below both triggers
    writer.handle_batch([_persist(2, _big_entries(5, 2, 2_000)), _committed(6)])
    writer.apply_some()
    assert writer.snapshot_job is not None
    assert writer.poll_snapshot(block=True)
    assert [6] == [index for index, _, _ in list_snapshots(tmp_path / "snap")]
    # The trigger restarts from the snapshot: 2,000 more bytes do not take another one.
    writer.handle_batch([_persist(3, _big_entries(7, 1, 2_000)), _committed(7)])
    writer.apply_some()
    assert writer.snapshot_job is None
    writer.close()


def test_writer_takes_no_snapshot_by_size_when_snapshot_bytes_is_zero(tmp_path: Path) -> None:
    """snapshot_bytes = 0 turns the size trigger off."""
    settings = lw.WriterSettings(snapshot_entries=1000, snapshot_bytes=0, snapshot_mode="thread")
    writer = lw.LogWriter(tmp_path, settings, state_machine=DictMachine)
    writer.handle_batch([_persist(1, _big_entries(1, 10, 2_000)), _committed(10)])
    writer.apply_some()
    assert writer.snapshot_job is None
    writer.close()


def test_writer_restores_replica_only_when_worker_applied_what_was_committed(tmp_path: Path) -> None:
    """After a restart the replica waits for HELLO and a COMMITTED beyond the recovered
    commit (the cluster serves again), then restores and applies the recovered log."""
    first = lw.LogWriter(tmp_path, lw.WriterSettings(snapshot_entries=5, snapshot_mode="thread"),
                         state_machine=DictMachine)
    first.handle_batch([_persist(1, _put_entries(1, 8), HardState(1, None, 8)), _committed(8)])
    first.apply_some()
    assert first.poll_snapshot(block=True)
    first.close()
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(snapshot_entries=0), state_machine=DictMachine)
    assert not writer.replica_may_run
    writer.handle_batch([lw._msg(lw.HELLO)])
    assert not writer.replica_may_run
    writer.handle_batch([_committed(8)])
    assert not writer.replica_may_run
    writer.handle_batch([_persist(1, _put_entries(9, 1), HardState(2, None, 9)), _committed(9)])
    assert writer.replica_may_run
    while writer.apply_some():
        pass
    expected = DictMachine()
    for e in _put_entries(1, 9):
        apply_entry(expected, e)
    assert (9, expected.state_hash()) == (writer.applied_index, writer._sm.state_hash() if writer._sm else 0)
    writer.close()


def _restart_and_replay(tmp_path: Path, reports: list[bytes], more: int = 6) -> SnapshotMeta:
    """Restart the writer on tmp_path, feed a restarted worker's reports, then enough new
    entries for a snapshot; the meta of the snapshot the replica takes."""
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(snapshot_entries=5, snapshot_mode="thread"),
                          state_machine=DictMachine)
    last = writer.wal.last_index
    writer.handle_batch([lw._msg(lw.HELLO), *reports])
    writer.handle_batch([_persist(1, _put_entries(last + 1, more), HardState(2, None, last + more)),
                         lw._msg(lw.COMMITTED, last + more, None)])
    while writer.apply_some():
        pass
    job = writer.snapshot_job
    assert job is not None, "no snapshot taken"
    assert writer.poll_snapshot(block=True)
    writer.close()
    return job.meta


def test_writer_snapshot_carries_the_membership_when_a_restarted_worker_reports_it_below_the_commit(
    tmp_path: Path,
) -> None:
    """Issue 12 #1: a restarted worker's first COMMITTED carries the membership at its
    recovered snapshot (index 0 here), below the recovered commit: the next snapshot must
    still carry it, not an empty voter list."""
    first = lw.LogWriter(tmp_path, lw.WriterSettings(snapshot_entries=0), state_machine=DictMachine)
    first.handle_batch([_persist(1, _put_entries(1, 8), HardState(1, None, 8)), _committed(8)])
    first.close()
    meta = _restart_and_replay(tmp_path, [_committed(0), lw._msg(lw.COMMITTED, 8, None)])
    assert SnapshotMeta(14, 1, CS) == meta


def test_writer_snapshot_carries_the_new_membership_when_it_changed_in_the_replayed_log(
    tmp_path: Path,
) -> None:
    """A membership change between the recovered snapshot and the recovered commit,
    reported while the worker replays, is the membership of the next snapshot."""
    first = lw.LogWriter(tmp_path, lw.WriterSettings(snapshot_entries=5, snapshot_mode="thread"),
                         state_machine=DictMachine)
    first.handle_batch([_persist(1, _put_entries(1, 12), HardState(1, None, 12)), _committed(5)])
    first.apply_some()
    assert first.poll_snapshot(block=True)
    first.handle_batch([_committed(12)])
    first.close()
    grown = ConfState(voters=(*CS.voters, NodeId("n4")))
    reports = [_committed(5), lw._msg(lw.COMMITTED, 9, codec.conf_state_to_obj(grown)),
               lw._msg(lw.COMMITTED, 12, None)]
    assert SnapshotMeta(18, 1, grown) == _restart_and_replay(tmp_path, reports)


def test_writer_withholds_persisted_and_reports_disk_until_a_retry_succeeds_when_sync_fails(tmp_path: Path) -> None:
    """EIO on fdatasync: no PERSISTED, a DISK report, the writer keeps serving; the retry acks everything."""
    failing = [True]

    def sync(fd: int) -> None:
        if failing[0]:
            raise OSError(errno.EIO, "Input/output error")
        os.fdatasync(fd)

    writer = lw.LogWriter(tmp_path, lw.WriterSettings(replica=False), sync_hook=sync)
    assert writer.handle_batch([_persist(1, make_entries(1, 2))])
    assert writer.handle_batch([_persist(2, make_entries(3, 1))])  # joins the failed batch
    (disk,) = writer.outbox
    kind, (wal_error, snapshot_error) = lw._parse(disk)
    assert lw.DISK == kind and "EIO" in str(wal_error) and None is snapshot_error
    assert writer.retry_due is not None
    writer.outbox.clear()
    failing[0] = False
    assert writer.flush()
    assert [lw._msg(lw.DISK, None, None), lw._msg(lw.PERSISTED, 2)] == writer.outbox
    assert None is writer.retry_due
    writer.close()
    assert make_entries(1, 3) == recover(tmp_path).entries


def test_writer_acks_a_restarted_worker_when_its_persist_numbers_start_again(tmp_path: Path) -> None:
    """A second HELLO (the raft worker restarted alone) restarts PERSIST numbering: PERSISTED(1) is sent again."""
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(replica=False))
    writer.handle_batch([lw._msg(lw.HELLO), _persist(1, make_entries(1, 1)), _persist(2, make_entries(2, 1))])
    writer.outbox.clear()
    writer.handle_batch([lw._msg(lw.HELLO), _persist(1, make_entries(3, 1))])
    assert lw._msg(lw.PERSISTED, 1) == writer.outbox[-1]
    writer.close()
    assert make_entries(1, 3) == recover(tmp_path).entries
