"""The log writer: group commit and acknowledgement order, replica snapshots, the client."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest
import zmq

from concord.errors import ProtocolError
from concord.ids import NodeId
from concord.node import log_writer as lw
from concord.raft.messages import ConfState, Entry, EntryType, Snapshot, SnapshotMeta
from concord.raft.state import HardState
from concord.storage.recovery import recover
from concord.storage.replica import apply_entry
from concord.storage.snapshot import list_snapshots, write_snapshot
from tests.storage.fake_sm import DictMachine
from tests.storage.util import make_entries, writer_process

CS = ConfState(voters=(NodeId("n1"), NodeId("n2"), NodeId("n3")))


def _put_entries(first: int, count: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, f"k{i % 7}=v{i}".encode(), 1000 + i) for i in range(first, first + count)]


def _persist(number: int, entries: list[Entry], hs: HardState | None = None, must_sync: bool = True) -> bytes:
    return lw.encode_persist(number, entries, hs, None, must_sync)


def test_writer_group_commits_and_acks_after_sync_when_requests_are_drained_together(tmp_path: Path) -> None:
    """N queued PERSIST requests: one write, one fdatasync, then one PERSISTED(N)."""
    syncs: list[int] = []
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(), sync_hook=lambda fd: syncs.append(len(writer.outbox)))
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
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(), sync_hook=syncs.append)
    writer.handle_batch([_persist(1, [], HardState(1, None, 3), must_sync=False)])
    writer.handle_batch([_persist(2, make_entries(1, 1), None, must_sync=False)])
    assert 1 == len(syncs)
    writer.close()
    assert HardState(1, None, 3) == recover(tmp_path).hard_state


def test_writer_rejects_request_when_persist_number_does_not_grow(tmp_path: Path) -> None:
    """Persist numbers are monotonic; a repeat is a protocol error."""
    writer = lw.LogWriter(tmp_path, lw.WriterSettings())
    writer.handle_batch([_persist(1, make_entries(1, 1))])
    with pytest.raises(ProtocolError, match="persist number 1 is not above 1"):
        writer.handle_batch([_persist(1, make_entries(2, 1))])
    writer.close()


def test_writer_installs_leader_snapshot_when_persist_carries_one(tmp_path: Path) -> None:
    """A snapshot from the leader is written and marked in the WAL (no state hash: no machine here)."""
    source = DictMachine()
    for e in _put_entries(1, 40):
        apply_entry(source, e)
    snap = Snapshot(SnapshotMeta(40, 3, CS), source.snapshot())
    writer = lw.LogWriter(tmp_path, lw.WriterSettings())
    writer.handle_batch([_persist(1, _put_entries(1, 5))])
    writer.handle_batch([lw.encode_persist(2, _put_entries(41, 2, term=3), HardState(3, None, 40), snap, True)])
    assert 40 == writer.core.snapshot_index
    writer.close()
    state = recover(tmp_path)
    assert snap == state.snapshot
    assert _put_entries(41, 2, term=3) == state.entries


def _take_snapshot(tmp_path: Path, meta: SnapshotMeta, machine: DictMachine) -> bytes:
    """What the raft worker's child does (the file), and the SNAPSHOT_TAKEN it then sends."""
    write_snapshot(tmp_path / "snap", Snapshot(meta, machine.snapshot()), machine.state_hash())
    return lw.encode_snapshot_taken(meta, machine.state_hash())


def test_writer_compacts_the_wal_and_keeps_the_newest_snapshots_when_the_worker_took_one(tmp_path: Path) -> None:
    """SNAPSHOT_TAKEN: segments the snapshot covers go, `keep_snapshots` files stay, recovery agrees."""
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(segment_bytes=4096, keep_snapshots=2))
    machine = DictMachine()
    entries = _big_entries(1, 90)
    for n, first in enumerate(range(0, 90, 10), start=1):
        writer.handle_batch([_persist(n, entries[first:first + 10])])
    segments = len(writer.wal.segments)
    assert segments > 3
    for e in entries[:30]:
        apply_entry(machine, e)
    writer.handle_batch([_take_snapshot(tmp_path, SnapshotMeta(30, 1, CS), machine)])
    for e in entries[30:80]:
        apply_entry(machine, e)
    writer.handle_batch([_take_snapshot(tmp_path, SnapshotMeta(80, 1, CS), machine)])
    for e in entries[80:85]:
        apply_entry(machine, e)
    writer.handle_batch([_take_snapshot(tmp_path, SnapshotMeta(85, 1, CS), machine)])
    assert len(writer.wal.segments) < segments
    assert [80, 85] == [index for index, _, _ in list_snapshots(tmp_path / "snap")]
    assert 3 == writer.stats()["snapshots_taken"]
    writer.close()
    state = recover(tmp_path)
    assert state.snapshot is not None and SnapshotMeta(85, 1, CS) == state.snapshot.meta
    assert machine.snapshot() == state.snapshot.data
    assert entries[85:] == state.entries


def test_writer_fails_when_the_worker_reports_a_snapshot_file_that_is_not_there(tmp_path: Path) -> None:
    """SNAPSHOT_TAKEN naming no file is a worker bug: a protocol error, nothing removed."""
    writer = lw.LogWriter(tmp_path, lw.WriterSettings(segment_bytes=4096))
    writer.handle_batch([_persist(1, _big_entries(1, 40))])
    segments = len(writer.wal.segments)
    with pytest.raises(ProtocolError, match="snapshot taken at index 30 term 1 but .* does not exist"):
        writer.handle_batch([lw.encode_snapshot_taken(SnapshotMeta(30, 1, CS), 7)])
    assert segments == len(writer.wal.segments)
    writer.close()


def _big_entries(first: int, count: int, data_bytes: int = 400) -> list[Entry]:
    return [Entry(1, i, EntryType.NORMAL, f"k{i}=".encode() + b"x" * data_bytes, 1000 + i)
            for i in range(first, first + count)]


# --- processes ------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_writer_process_acks_snapshots_and_stops_when_driven_by_the_client(tmp_path: Path, short_dir: Path) -> None:
    """Over ipc: handshake, persist, acks, a snapshot taken (pruned to one), stats, graceful stop."""
    endpoint = f"ipc://{short_dir}/w.sock"
    settings = lw.WriterSettings(keep_snapshots=1)
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
            machine = DictMachine()
            for e in entries[:6]:
                apply_entry(machine, e)
            client.socket.send(_take_snapshot(tmp_path, SnapshotMeta(6, 1, CS), machine))
            for e in entries[6:]:
                apply_entry(machine, e)
            client.socket.send(_take_snapshot(tmp_path, SnapshotMeta(12, 1, CS), machine))
            client.request_stats()
            stats: list[lw.WriterStats] = []
            while not stats:
                stats = [e for e in client.recv(timeout_ms=5000) if isinstance(e, lw.WriterStats)]
            assert 2 == stats[0].values["snapshots_taken"]
            assert 12 == stats[0].values["snapshot_index"]
            assert stats[0].values["syncs"] <= 12
            client.stop()
            proc.join(10)
            assert 0 == proc.exitcode
    finally:
        client.close()
        ctx.term()
    assert [12] == [index for index, _, _ in list_snapshots(tmp_path / "snap")]


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
    with writer_process(tmp_path, endpoint, lw.WriterSettings()) as proc:
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
        with writer_process(tmp_path, endpoint, lw.WriterSettings()) as proc:
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
    writer = lw.LogWriter(tmp_path, lw.WriterSettings())
    writer.handle_batch([_persist(1, make_entries(1, 3))])
    with pytest.raises(ProtocolError, match="persist appends index 5 but the log ends at 3"):
        writer.handle_batch([_persist(2, make_entries(5, 1))])
    bad_run = make_entries(4, 1) + make_entries(6, 1)
    with pytest.raises(ValueError, match="entries 4..6 are not 2 consecutive indexes"):
        _persist(3, bad_run)  # refused by the worker's side: the writer does not decode entries
    writer.close()
    assert make_entries(1, 3) == recover(tmp_path).entries


@pytest.mark.integration
@pytest.mark.slow
def test_client_raises_and_writer_exits_when_worker_sends_a_bad_request(tmp_path: Path, short_dir: Path) -> None:
    """A request that breaks the protocol gets FAILED (StorageError at the client) and exit 1."""
    from concord.errors import StorageError

    endpoint = f"ipc://{short_dir}/w.sock"
    ctx = zmq.Context()
    client = lw.LogWriterClient(endpoint, ctx)
    try:
        with writer_process(tmp_path, endpoint, lw.WriterSettings()) as proc:
            client.handshake(20)
            client.persist(1, make_entries(3, 1), None, None, True)  # index 3 on an empty log: a gap
            with pytest.raises(StorageError, match="log writer failed: persist appends index 3 but the log ends at 0"):
                client.recv(timeout_ms=10_000)
            proc.join(10)
            assert 1 == proc.exitcode
    finally:
        client.close()
        ctx.term()


def test_writer_withholds_persisted_and_reports_disk_until_a_retry_succeeds_when_sync_fails(tmp_path: Path) -> None:
    """EIO on fdatasync: no PERSISTED, a DISK report, the writer keeps serving; the retry acks everything."""
    failing = [True]

    def sync(fd: int) -> None:
        if failing[0]:
            raise OSError(errno.EIO, "Input/output error")
        os.fdatasync(fd)

    writer = lw.LogWriter(tmp_path, lw.WriterSettings(), sync_hook=sync)
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
    writer = lw.LogWriter(tmp_path, lw.WriterSettings())
    writer.handle_batch([lw._msg(lw.HELLO), _persist(1, make_entries(1, 1)), _persist(2, make_entries(2, 1))])
    writer.outbox.clear()
    writer.handle_batch([lw._msg(lw.HELLO), _persist(1, make_entries(3, 1))])
    assert lw._msg(lw.PERSISTED, 1) == writer.outbox[-1]
    writer.close()
    assert make_entries(1, 3) == recover(tmp_path).entries


@pytest.mark.parametrize("fields, error", [
    ([1, 3, 2, b"\x91\x00", None, None, True], "entries are not a packed array of 2"),
    ([1, 3, 1, "\x91", None, None, True], "entries are not a packed array of 1"),
    ([1, 0, 1, b"\x91\x00", None, None, True], "entries from index 0"),
    ([1, 3, 0, b"\x90", None, None, 1], "must_sync is not a bool"),
    ([1, 3, 0, b"\x90", None, None], "expected 7 fields, got 6"),
])
def test_writer_rejects_persist_when_its_entries_field_is_malformed(
        tmp_path: Path, fields: list[object], error: str) -> None:
    """A PERSIST whose packed array does not hold `count` entries is refused; nothing is written."""
    from concord.storage import codec

    writer = lw.LogWriter(tmp_path, lw.WriterSettings())
    with pytest.raises(ProtocolError, match=error):
        writer.handle_batch([codec.packb([lw.PROTOCOL_VERSION, lw.PERSIST, *fields])])
    writer.close()
    assert [] == recover(tmp_path).entries


def test_writer_wal_is_byte_identical_when_entries_come_packed(tmp_path: Path) -> None:
    """The writer's WAL (packed entries copied in) equals one written from Entry objects."""
    from concord.storage.recovery import wal_dir
    from concord.storage.wal import WAL, WalOptions
    from concord.storage.walread import read_wal

    batches = [_put_entries(1, 1), _put_entries(2, 20, term=2), _put_entries(22, 3, term=2)]
    writer = lw.LogWriter(tmp_path / "a", lw.WriterSettings())
    writer.handle_batch([_persist(n, b, HardState(2, None, 0)) for n, b in enumerate(batches, 1)])
    writer.close()
    (tmp_path / "b").mkdir()
    wal = WAL(wal_dir(tmp_path / "b"), WalOptions(), read_wal(wal_dir(tmp_path / "b")))
    for batch in batches:
        wal.append_entries(batch)
        wal.set_hard_state(HardState(2, None, 0))
    wal.flush()
    wal.close()
    written = sorted(wal_dir(tmp_path / "a").iterdir())
    assert [p.read_bytes() for p in written] == [p.read_bytes() for p in sorted(wal_dir(tmp_path / "b").iterdir())]
    assert written and _put_entries(1, 1) + _put_entries(2, 23, term=2) == recover(tmp_path / "a").entries
