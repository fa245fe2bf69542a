"""The raft worker's forked snapshot child and the restore from its file (real forks, files)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import pytest

from concord.errors import StorageError
from concord.ids import NodeId
from concord.node.logwriter.ipc import HelloAnswer
from concord.node.snapshot_fork import SnapshotLoader, SnapshotWriter
from concord.node.worker_snapshots import check_restored, load_recovered
from concord.raft.messages import ConfState, Snapshot, SnapshotMeta
from concord.raft.state import HardState
from concord.storage.replica import apply_entry
from concord.storage.snapshot import read_snapshot, write_snapshot
from tests.helpers import wait_until
from tests.storage.fake_sm import DictMachine
from tests.storage.util import make_entries

CS = ConfState(voters=(NodeId("n1"),))
META = SnapshotMeta(20, 2, CS)

pytestmark = pytest.mark.slow


def _machine(count: int = 20) -> DictMachine:
    machine = DictMachine()
    for entry in make_entries(1, count):
        apply_entry(machine, entry)
    return machine


def test_child_writes_the_state_as_it_was_at_fork_when_the_parent_changes_it_meanwhile(tmp_path: Path) -> None:
    """Copy-on-write: the file holds the state at fork, with its hash, whatever the parent does next."""
    machine = _machine()
    expected = (machine.snapshot(), machine.state_hash())
    writer = SnapshotWriter(tmp_path, machine.snapshot, machine.state_hash)
    job = writer.start(META, 123)
    for entry in make_entries(21, 5):
        apply_entry(machine, entry)
    outcome = writer.poll(block=True)
    assert outcome is not None and (expected[1], None) == (outcome.state_hash, outcome.error)
    assert (job, None) == (outcome.job, writer.job)
    loaded = read_snapshot(job.path)
    assert (Snapshot(META, expected[0]), expected[1]) == (loaded.snapshot, loaded.state_hash)


def test_child_reports_the_error_and_leaves_no_temp_file_when_serializing_fails(tmp_path: Path) -> None:
    """An exception in the child is reported on the pipe (never raised in the parent)."""

    def broken() -> bytes:
        raise ValueError("cannot serialize")

    writer = SnapshotWriter(tmp_path, broken, lambda: 0)
    writer.start(META, 0)
    outcome = writer.poll(block=True)
    assert outcome is not None and outcome.state_hash is None
    assert "ValueError: cannot serialize" == outcome.error
    assert [] == list(tmp_path.iterdir())


def test_killed_child_is_a_failed_snapshot_when_it_dies_without_a_result(tmp_path: Path) -> None:
    """SIGKILL mid-write: an outcome with the exit status, the temp file removed; never fatal."""
    read_fd, write_fd = os.pipe()

    def stuck() -> bytes:
        os.close(write_fd)  # tell the test the child runs, then wait to be killed
        os.read(read_fd, 1)
        return b""

    writer = SnapshotWriter(tmp_path, stuck, lambda: 0)
    job = writer.start(META, 0)
    os.close(write_fd)
    assert b"" == os.read(read_fd, 1)  # EOF: the child closed its end, it is in snapshot()
    os.close(read_fd)
    job.path.with_name(job.path.name + ".tmp").write_bytes(b"half")
    os.kill(job.pid, signal.SIGKILL)
    outcome = writer.poll(block=True)
    assert outcome is not None and outcome.state_hash is None
    assert f"snapshot child exited with status {-signal.SIGKILL} and no result" == outcome.error
    assert [] == list(tmp_path.iterdir())
    writer.start(META, 0)  # the next one starts
    writer.abandon()


def test_abandon_kills_and_reaps_the_child_when_the_worker_stops(tmp_path: Path) -> None:
    """No snapshot child outlives its worker: abandon() kills and reaps it."""
    read_fd, write_fd = os.pipe()

    def stuck() -> bytes:
        os.read(read_fd, 1)
        return b""

    writer = SnapshotWriter(tmp_path, stuck, lambda: 0)
    job = writer.start(META, 0)
    writer.abandon()
    os.close(read_fd)
    os.close(write_fd)
    assert writer.job is None
    with pytest.raises(ChildProcessError):
        os.waitpid(job.pid, os.WNOHANG)  # already reaped


def test_restore_reads_the_snapshot_file_the_hello_answer_names(tmp_path: Path) -> None:
    """The raft worker loads the snapshot from disk (the bytes do not cross the socket)."""
    machine = _machine()
    write_snapshot(tmp_path / "snap", Snapshot(META, machine.snapshot()), machine.state_hash())
    entries = make_entries(21, 3)
    state, recorded = load_recovered(tmp_path, HelloAnswer(META, HardState(2, None, 22), entries))
    assert Snapshot(META, machine.snapshot()) == state.snapshot
    assert (HardState(2, None, 22), entries, machine.state_hash()) == (state.hard_state, state.entries, recorded)
    with pytest.raises(StorageError):
        load_recovered(tmp_path, HelloAnswer(SnapshotMeta(30, 2, CS), HardState(), []))


def test_restored_state_hash_mismatch_is_logged_when_restore_does_not_round_trip(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The cheap non-determinism check: the file's recorded hash against the restored state's."""
    log = logging.getLogger("test.snapshots")
    with caplog.at_level(logging.ERROR):
        assert check_restored(log, META, 0xABC, 0xABC)
        assert check_restored(log, META, None, 0xDEF)  # nothing recorded (installed from a leader)
        assert "" == caplog.text
        assert not check_restored(log, META, 0xABC, 0xDEF)
    assert "restored state hash mismatch" in caplog.text and "index=20" in caplog.text


def _taken(loader: SnapshotLoader) -> list[tuple[SnapshotMeta, bytes | str]]:
    """What the loader finished, once it finished something."""
    got: list[tuple[SnapshotMeta, bytes | str]] = []

    def finished() -> bool:
        got.extend(loader.take())
        return bool(got)

    wait_until(finished, timeout_s=10)
    return got


def test_loader_reads_a_written_snapshot_off_the_caller_when_the_read_is_slow(tmp_path: Path) -> None:
    """The raft worker's loop hands the read-back to a thread and collects it later."""
    release = threading.Event()

    def read(path: Path) -> bytes:
        release.wait(10)
        return read_snapshot(path).snapshot.data

    path = write_snapshot(tmp_path, Snapshot(META, b"state at 20"), 7)
    loader = SnapshotLoader(read)
    loader.start(META, path)  # returns while the read waits
    assert [] == loader.take()
    release.set()
    assert [(META, b"state at 20")] == _taken(loader)
    assert [] == loader.take()


def test_loader_reports_the_error_when_the_written_snapshot_cannot_be_read(tmp_path: Path) -> None:
    """A vanished or damaged file is an error for the caller to log, not an exception."""
    loader = SnapshotLoader(lambda path: read_snapshot(path).snapshot.data)
    loader.start(META, tmp_path / "gone.snap")
    ((meta, outcome),) = _taken(loader)
    assert META == meta and isinstance(outcome, str) and "gone.snap" in outcome
