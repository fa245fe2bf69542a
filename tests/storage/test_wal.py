"""The WAL: framing, torn tails, corruption, truncation, rotation, removal, group commit."""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

import pytest

from concord.errors import CorruptionError, DiskError, StorageError
from concord.ids import NodeId
from concord.raft.messages import SnapshotMeta
from concord.raft.state import HardState
from concord.storage import faults
from concord.storage.format import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE
from concord.storage.recovery import recover, wal_dir
from concord.storage.wal import WAL, GroupCommitter, WalOptions
from concord.storage.walread import read_wal
from tests.helpers import wait_until
from tests.storage.util import make_entries, open_wal


def _write_three_records(data_dir: Path) -> tuple[Path, list[int]]:
    """Three ENTRIES records, one flush each; returns the segment and each record's offset."""
    wal = open_wal(data_dir)
    offsets = []
    for first in (1, 4, 7):
        offsets.append(wal.segments[-1].size)
        wal.append_entries(make_entries(first, 3))
        wal.flush()
    offsets.append(wal.segments[-1].size)
    wal.close()
    return wal.segments[-1].path, offsets


@pytest.mark.slow
def test_recovery_keeps_complete_records_when_last_record_is_cut_at_every_byte(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every truncation point inside the last record recovers exactly the records before it."""
    seg, offsets = _write_three_records(tmp_path)
    original = seg.read_bytes()
    start, end = offsets[2], offsets[3]
    assert end == len(original)
    for cut in range(start + 1, end):
        seg.write_bytes(original[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            state = recover(tmp_path)
        assert make_entries(1, 6) == state.entries, f"cut={cut}"
        assert start == seg.stat().st_size, f"cut={cut}"
        assert f"file={seg} offset={start} bytes_dropped={cut - start}" in caplog.text


@pytest.mark.slow
def test_recovery_raises_naming_file_and_offset_when_a_middle_record_has_a_flipped_bit(tmp_path: Path) -> None:
    """A flipped bit anywhere in a middle record gives CorruptionError naming file and offset."""
    seg, offsets = _write_three_records(tmp_path)
    original = seg.read_bytes()
    start, end = offsets[1], offsets[2]
    for pos in range(start, end):
        for bit in (0, 7):
            damaged = bytearray(original)
            damaged[pos] ^= 1 << bit
            seg.write_bytes(bytes(damaged))
            with pytest.raises(CorruptionError) as info:
                recover(tmp_path)
            assert f"wal file {seg} is corrupt at offset {start}" in str(info.value), f"pos={pos}"
            assert "rejoin from a peer" in str(info.value)
    seg.write_bytes(original)
    assert make_entries(1, 9) == recover(tmp_path).entries


def test_recovery_does_not_modify_file_when_corruption_is_found(tmp_path: Path) -> None:
    """CorruptionError leaves the file byte for byte as it was (no silent repair)."""
    seg, offsets = _write_three_records(tmp_path)
    damaged = bytearray(seg.read_bytes())
    damaged[offsets[1] + RECORD_HEADER_SIZE + 2] ^= 0x10
    seg.write_bytes(bytes(damaged))
    with pytest.raises(CorruptionError):
        recover(tmp_path)
    assert bytes(damaged) == seg.read_bytes()


def test_recovery_raises_when_bad_record_is_at_the_tail_of_a_non_last_segment(tmp_path: Path) -> None:
    """A torn-looking tail is only forgiven in the last segment."""
    wal = open_wal(tmp_path, segment_bytes=200)
    for first in range(1, 30, 3):
        wal.append_entries(make_entries(first, 3))
        wal.flush()
    wal.close()
    segments = wal.segments
    assert len(segments) >= 3
    first_seg = segments[0].path
    data = first_seg.read_bytes()
    first_seg.write_bytes(data[:-1])
    with pytest.raises(CorruptionError, match=f"wal file {first_seg} is corrupt at offset .*not the last segment"):
        recover(tmp_path)


def test_log_is_truncated_when_conflicting_suffix_is_appended_and_node_restarts(tmp_path: Path) -> None:
    """Appending index i drops i.. on replay, across a restart too."""
    wal = open_wal(tmp_path)
    wal.append_entries(make_entries(1, 10, term=1))
    wal.flush()
    wal.append_entries(make_entries(6, 3, term=2))
    wal.set_hard_state(HardState(2, NodeId("n2"), 5))
    wal.flush()
    wal.close()
    expected = make_entries(1, 5, term=1) + make_entries(6, 3, term=2)
    assert expected == recover(tmp_path).entries
    wal = open_wal(tmp_path)
    assert 8 == wal.last_index
    wal.append_entries(make_entries(9, 2, term=2))
    wal.append_entries(make_entries(4, 1, term=3))
    wal.flush()
    wal.close()
    state = recover(tmp_path)
    assert make_entries(1, 3, term=1) + make_entries(4, 1, term=3) == state.entries
    assert HardState(2, NodeId("n2"), 5) == state.hard_state


def test_hard_state_round_trips_when_written_and_recovered(tmp_path: Path) -> None:
    """The last hard state written is the one recovered."""
    wal = open_wal(tmp_path)
    wal.set_hard_state(HardState(1, NodeId("n1"), 0))
    wal.flush()
    wal.set_hard_state(HardState(3, None, 7))
    wal.flush(sync=False)
    wal.close()
    assert HardState(3, None, 7) == recover(tmp_path).hard_state


def test_segments_rotate_and_restate_hard_state_when_segment_size_is_reached(tmp_path: Path) -> None:
    """Rotation starts new segments at the configured size; replay sees one log."""
    wal = open_wal(tmp_path, segment_bytes=300)
    wal.set_hard_state(HardState(4, NodeId("n1"), 2))
    for first in range(1, 61, 5):
        wal.append_entries(make_entries(first, 5, term=4))
        wal.flush()
    wal.close()
    segments = wal.segments
    assert len(segments) > 3
    for seg in segments:
        assert seg.path.stat().st_size < 300 + 5 * 40 + RECORD_HEADER_SIZE + 20
    for seg in segments[1:]:
        # the first record after the header is the restated hard state
        assert 2 == seg.path.read_bytes()[SEGMENT_HEADER_SIZE + 12]
    state = recover(tmp_path)
    assert make_entries(1, 60, term=4) == state.entries
    assert HardState(4, NodeId("n1"), 2) == state.hard_state


def test_covered_segments_are_removed_when_snapshot_index_passes_them(tmp_path: Path) -> None:
    """Segments whose entries are all <= the snapshot index go; the active one stays."""
    wal = open_wal(tmp_path, segment_bytes=300)
    wal.set_hard_state(HardState(1, NodeId("n1"), 40))
    for first in range(1, 61, 5):
        wal.append_entries(make_entries(first, 5))
        wal.flush()
    before = wal.segments
    removed = wal.remove_covered(32)
    after = wal.segments
    assert [s.path for s in before if s.max_index <= 32] == removed
    assert all(not p.exists() for p in removed)
    assert before[len(removed) :] == after
    assert after[0].max_index > 32
    wal.remove_covered(10**9)
    assert 1 == len(wal.segments)
    wal.close()
    contents = read_wal(wal_dir(tmp_path))
    assert HardState(1, NodeId("n1"), 40) == contents.hard_state
    assert 60 == contents.entries[-1].index


def test_installed_snapshot_marker_discards_older_log_when_replayed(tmp_path: Path) -> None:
    """An installed snapshot marker replaces the whole log; a local one drops only <= index."""
    wal = open_wal(tmp_path)
    wal.append_entries(make_entries(1, 10, term=1))
    wal.mark_snapshot(SnapshotMeta(20, 3), installed=True)
    wal.append_entries(make_entries(21, 2, term=3))
    wal.flush()
    wal.close()
    assert make_entries(21, 2, term=3) == read_wal(wal_dir(tmp_path)).entries


def test_torn_new_segment_is_removed_when_crash_hit_its_creation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A last segment shorter than its header is a crash during rotation: removed, warned."""
    wal = open_wal(tmp_path)
    wal.append_entries(make_entries(1, 3))
    wal.flush()
    wal.close()
    torn = wal_dir(tmp_path) / "0000000000000002-0000000000000004.wal"
    torn.write_bytes(b"CWAL\x01")
    with caplog.at_level(logging.WARNING):
        assert make_entries(1, 3) == recover(tmp_path).entries
    assert not torn.exists()
    assert f"file={torn} offset=0 bytes_dropped=5" in caplog.text


def test_wal_logs_warning_when_fsync_is_disabled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """fsync = false says so loudly and skips every sync."""
    calls: list[int] = []
    with caplog.at_level(logging.WARNING):
        wal = WAL(wal_dir(tmp_path), WalOptions(fsync=False), read_wal(wal_dir(tmp_path)), sync_hook=calls.append)
    wal.append_entries(make_entries(1, 1))
    wal.flush()
    wal.close()
    assert "fsync is DISABLED" in caplog.text
    assert [] == calls


def test_flush_writes_once_and_syncs_once_when_many_records_are_queued(tmp_path: Path) -> None:
    """One flush of a batch is one write and one fdatasync."""
    calls: list[int] = []
    wal = WAL(wal_dir(tmp_path), WalOptions(), read_wal(wal_dir(tmp_path)), sync_hook=calls.append)
    for first in range(1, 100, 3):
        wal.append_entries(make_entries(first, 3))
        wal.set_hard_state(HardState(1, None, first))
    wal.flush()
    assert (1, 1, 1) == (wal.write_count, wal.sync_count, len(calls))
    wal.close()


@pytest.mark.timeout(20)
def test_group_commit_uses_fewer_fdatasyncs_when_requests_arrive_during_a_sync(tmp_path: Path) -> None:
    """N concurrent submits while one fdatasync runs go out in ONE more write + fdatasync."""
    n = 16
    release = threading.Event()
    synced: list[int] = []

    def slow_sync(fd: int) -> None:
        if not synced:
            release.wait(10)
        os.fdatasync(fd)
        synced.append(fd)

    wal = WAL(wal_dir(tmp_path), WalOptions(), read_wal(wal_dir(tmp_path)), sync_hook=slow_sync)
    committer = GroupCommitter(wal)
    threads = [
        threading.Thread(target=committer.submit, args=((), HardState(1, None, k))) for k in range(n)
    ]
    threads[0].start()
    wait_until(lambda: wal.write_count == 1, 5, "first flush did not start")
    for t in threads[1:]:
        t.start()
    wait_until(lambda: committer.queued == n - 1, 5, lambda: f"queued={committer.queued}")
    release.set()
    for t in threads:
        t.join(10)
    wal.close()
    assert 2 == len(synced)
    assert 2 == wal.write_count
    assert recover(tmp_path).hard_state.commit in range(1, n)


def test_recovery_cuts_tail_when_file_was_extended_with_zeros(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A crash that left the file extended with zeros (size updated, data never written) is a torn tail."""
    seg, offsets = _write_three_records(tmp_path)
    with seg.open("ab") as f:
        f.write(b"\0" * (1 << 20))
    with caplog.at_level(logging.WARNING):
        assert make_entries(1, 9) == recover(tmp_path).entries
    assert offsets[3] == seg.stat().st_size
    assert f"offset={offsets[3]} bytes_dropped={1 << 20}" in caplog.text


def test_wal_refuses_to_open_when_replay_was_not_repaired(tmp_path: Path) -> None:
    """Appending after an un-cut torn tail would bury records behind garbage: refused."""
    seg, offsets = _write_three_records(tmp_path)
    seg.write_bytes(seg.read_bytes()[:-3])
    contents = read_wal(wal_dir(tmp_path), repair=False)
    with pytest.raises(StorageError, match="valid records end at"):
        WAL(wal_dir(tmp_path), WalOptions(), contents)


def test_zeroed_new_segment_is_removed_when_its_creation_never_reached_the_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A last segment of zeros (size persisted, data not) holds nothing: removed with a warning."""
    wal = open_wal(tmp_path)
    wal.append_entries(make_entries(1, 3))
    wal.flush()
    wal.close()
    torn = wal_dir(tmp_path) / "0000000000000002-0000000000000004.wal"
    torn.write_bytes(bytes(SEGMENT_HEADER_SIZE + 40))
    with caplog.at_level(logging.WARNING):
        assert make_entries(1, 3) == recover(tmp_path).entries
    assert not torn.exists()
    assert f"file={torn} offset=0 bytes_dropped={SEGMENT_HEADER_SIZE + 40}" in caplog.text


def test_recovery_raises_when_last_segment_header_is_damaged_but_records_follow(tmp_path: Path) -> None:
    """A flipped bit in the active segment's header, with valid records after it, is corruption."""
    seg, _ = _write_three_records(tmp_path)
    data = bytearray(seg.read_bytes())
    data[9] ^= 0x01
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match=f"wal file {seg} is corrupt at offset 0: segment header checksum mismatch"):
        recover(tmp_path)


def test_batch_rewritten_into_a_fresh_segment_when_fdatasync_failed(tmp_path: Path) -> None:
    """fsyncgate: after a failed fdatasync the batch is never re-synced in place: cut, new segment, rewrite."""
    calls: list[int] = []

    def failing_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        os.fdatasync(fd)

    wal = WAL(wal_dir(tmp_path), WalOptions(), read_wal(wal_dir(tmp_path)), sync_hook=failing_once)
    wal.append_entries(make_entries(1, 3))
    wal.flush()
    durable = wal.segments[-1].size
    first = wal.segments[-1].path
    wal.append_entries(make_entries(4, 3))
    with pytest.raises(DiskError, match="EIO"):
        wal.flush()
    assert wal.failed and wal.has_pending
    assert durable < first.stat().st_size  # the batch reached the page cache, not the disk
    wal.append_entries(make_entries(7, 2))  # arrives while failed: joins the batch
    wal.flush()
    wal.close()
    assert not wal.failed
    assert [first, wal.segments[-1].path] == [s.path for s in wal.segments]
    assert durable == first.stat().st_size  # sealed at its durable end
    assert calls[-1] != calls[1]  # the retry synced the NEW file
    assert make_entries(1, 8) == recover(tmp_path).entries


def test_torn_append_sealed_and_recovered_when_disk_fills(tmp_path: Path) -> None:
    """ENOSPC halfway through an append (the test-only seam): the retry leaves no torn record mid-log."""
    fault_file = tmp_path / "faults.json"
    faults.configure(fault_file)
    try:
        wal = open_wal(tmp_path)
        wal.append_entries(make_entries(1, 3))
        wal.flush()
        fault_file.write_text('{"wal_write": "ENOSPC"}')
        wal.append_entries(make_entries(4, 3))
        for _ in range(2):  # the seam also fails the new segment the retry starts
            with pytest.raises(DiskError, match="ENOSPC"):
                wal.flush()
        assert 1 == len(list(wal_dir(tmp_path).glob("*.wal")))  # no half-made segment left
        fault_file.write_text("{}")
        wal.flush()
        wal.close()
    finally:
        faults.configure(None)
    assert 2 == len(list(wal_dir(tmp_path).glob("*.wal")))
    assert make_entries(1, 6) == recover(tmp_path).entries


def test_seal_cuts_back_to_the_last_synced_size_when_unsynced_hard_states_preceded_the_failure(tmp_path: Path) -> None:
    """Unsynced commit-only hard states may have been in the failed writeback: the cut drops them; the new segment restates the hard state."""
    failing = [False]

    def sync(fd: int) -> None:
        if failing[0]:
            raise OSError(errno.EIO, "Input/output error")
        os.fdatasync(fd)

    wal = WAL(wal_dir(tmp_path), WalOptions(), read_wal(wal_dir(tmp_path)), sync_hook=sync)
    wal.append_entries(make_entries(1, 3))
    wal.flush()
    synced = wal.segments[-1].size
    first = wal.segments[-1].path
    wal.set_hard_state(HardState(1, None, 2))
    wal.flush(sync=False)  # a commit-only hard state: written, not synced
    failing[0] = True
    wal.append_entries(make_entries(4, 1))
    with pytest.raises(DiskError):
        wal.flush()
    failing[0] = False
    wal.flush()
    wal.close()
    assert synced == first.stat().st_size
    state = recover(tmp_path)
    assert make_entries(1, 4) == state.entries
    assert 2 == state.hard_state.commit
