"""Snapshot files: format, atomic replacement, keeping the previous one, crash leftovers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from concord.errors import CorruptionError
from concord.ids import NodeId
from concord.raft.messages import ConfState, Snapshot, SnapshotMeta
from concord.raft.state import HardState
from concord.storage import snapshot as snapfile
from concord.storage.recovery import recover, snap_dir
from tests.storage.util import make_entries, open_wal

CS = ConfState(voters=(NodeId("n1"), NodeId("n2")), learners=(NodeId("n3"),))


def _snap(index: int, term: int = 2) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, CS), f"state at {index}".encode() * 50)


def test_snapshot_round_trips_when_written_and_read(tmp_path: Path) -> None:
    """Meta, membership, body and state hash come back; the body is compressed on disk."""
    path = snapfile.write_snapshot(tmp_path, _snap(10), state_hash=0xFEED)
    loaded = snapfile.read_snapshot(path)
    assert (_snap(10), 0xFEED) == (loaded.snapshot, loaded.state_hash)
    assert path.stat().st_size < len(_snap(10).data)


def test_only_the_newest_snapshots_are_kept_when_pruned(tmp_path: Path) -> None:
    """prune keeps the newest `keep` files."""
    for index in (10, 20, 30):
        snapfile.write_snapshot(tmp_path, _snap(index), None)
    snapfile.prune(tmp_path, keep=2)
    assert [20, 30] == [i for i, _, _ in snapfile.list_snapshots(tmp_path)]


def test_previous_snapshot_is_used_when_crash_left_a_partial_temp_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A crash before the rename leaves a .tmp file: ignored, removed with a warning."""
    snapfile.write_snapshot(snap_dir(tmp_path), _snap(10), None)

    def crash(tmp: Path) -> None:
        tmp.write_bytes(tmp.read_bytes()[:40])  # as if the process died mid-write
        raise KeyboardInterrupt("simulated crash before rename")

    with pytest.raises(KeyboardInterrupt):
        snapfile.write_snapshot(snap_dir(tmp_path), _snap(20), None, before_rename=crash)
    assert 1 == len(list(snap_dir(tmp_path).glob("*.tmp")))
    with caplog.at_level(logging.WARNING):
        state = recover(tmp_path)
    assert _snap(10) == state.snapshot
    assert [] == list(snap_dir(tmp_path).glob("*.tmp"))
    assert "removing incomplete temporary file" in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "empty"])
def test_previous_snapshot_is_used_when_newest_file_is_damaged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    """A torn or flipped newest snapshot falls back to the previous one, loudly."""
    snapfile.write_snapshot(snap_dir(tmp_path), _snap(10), None)
    newest = snapfile.write_snapshot(snap_dir(tmp_path), _snap(20), None)
    data = bytearray(newest.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "bitflip":
        data[len(data) - 3] ^= 0x04
    else:
        data = bytearray()
    newest.write_bytes(bytes(data))
    wal = open_wal(tmp_path)
    wal.append_entries(make_entries(1, 25))
    wal.flush()
    wal.close()
    with caplog.at_level(logging.WARNING):
        state = recover(tmp_path)
    assert _snap(10) == state.snapshot
    assert make_entries(11, 15) == state.entries
    assert f"file={newest}" in caplog.text
    assert newest.with_name(newest.name + ".corrupt").exists()


def test_recovery_raises_when_every_snapshot_is_damaged(tmp_path: Path) -> None:
    """No valid snapshot at all is corruption, never a silent empty start."""
    path = snapfile.write_snapshot(snap_dir(tmp_path), _snap(10), None)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CorruptionError, match=f"snapshot file {path} is corrupt.*rejoin from a peer"):
        recover(tmp_path)


def test_recovery_raises_when_wal_starts_after_a_gap_past_the_snapshot(tmp_path: Path) -> None:
    """Entries that do not continue the snapshot are reported, not glued together."""
    snapfile.write_snapshot(snap_dir(tmp_path), _snap(10), None)
    wal = open_wal(tmp_path)
    wal.append_entries(make_entries(15, 3))
    wal.flush()
    wal.close()
    with pytest.raises(CorruptionError, match="log gap.*index 15.*index 10"):
        recover(tmp_path)


def test_recovered_commit_is_at_least_snapshot_index_when_hard_state_lagged(tmp_path: Path) -> None:
    """A snapshot only holds committed entries, so commit is raised to its index."""
    snapfile.write_snapshot(snap_dir(tmp_path), _snap(10), None)
    wal = open_wal(tmp_path)
    wal.set_hard_state(HardState(2, NodeId("n1"), 4))
    wal.append_entries(make_entries(1, 12, term=2))
    wal.flush()
    wal.close()
    state = recover(tmp_path)
    assert HardState(2, NodeId("n1"), 10) == state.hard_state
    assert make_entries(11, 2, term=2) == state.entries
