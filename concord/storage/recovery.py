"""
Start-up recovery: the newest valid snapshot plus the WAL after it.

    <data_dir>/snap/*.snap   snapshot files (concord/storage/snapshot.py)
    <data_dir>/wal/*.wal     WAL segments (concord/storage/format.py)

`recover()` returns `RecoveredState(snapshot, hard_state, entries)`, what the driver loads
into its MemoryStorage. Rules:

- a torn tail of the last WAL segment is cut off with a WARNING (file, offset, bytes);
- a bad record anywhere else, an unreadable set of snapshots, a WAL that refers to a
  snapshot that is missing, or a gap between the snapshot and the first entry raises
  CorruptionError naming the file (and offset) and the way forward;
- `entries` start at `snapshot.meta.index + 1` (entries the snapshot covers are dropped);
- `hard_state.commit` is raised to the snapshot index if it was lower (a snapshot only
  ever holds committed entries; the commit-only hard state is written without fsync).

`with_snapshot_membership()` gives a recovered snapshot written without a membership
(by an older writer) the membership the log determines, for the raft worker to start from.

Never deletes data that was not torn: `repair=True` only truncates a torn tail, removes
a segment torn at creation, deletes stale `*.tmp` files and renames bad snapshots to
`*.corrupt`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from concord.errors import CorruptionError, StorageError
from concord.raft.messages import ConfState, Entry, Snapshot
from concord.raft.state import HardState
from concord.storage import fileutil
from concord.storage.format import WAY_FORWARD
from concord.storage.membership import has_membership, membership_from_log
from concord.storage.snapshot import load_newest
from concord.storage.walread import WalContents, read_wal

logger = logging.getLogger(__name__)


def wal_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "wal"


def snap_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "snap"


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """What storage recovery hands to the driver."""

    snapshot: Snapshot | None
    hard_state: HardState
    entries: list[Entry]


@dataclass(frozen=True, slots=True)
class Recovery:
    """The writer's view of recovery: the state, the WAL replay and the snapshot's hash."""

    state: RecoveredState
    wal: WalContents
    snapshot_state_hash: int | None


def recover_for_writing(data_dir: Path, repair: bool = True, snapshot_body: bool = True) -> Recovery:
    """
    Recover and keep the WAL replay so the writer can reopen the WAL without rereading.
    `snapshot_body` False: the snapshot is verified but its data is left empty (b"").

    Raises:
        CorruptionError: see the module docstring.
        StorageError: the files could not be read or repaired.
    """
    data_dir = Path(data_dir)
    try:
        return _recover(data_dir, repair, snapshot_body)
    except OSError as exc:
        raise StorageError(f"cannot recover data dir {data_dir}: {exc}") from exc


def _recover(data_dir: Path, repair: bool, snapshot_body: bool) -> Recovery:
    if repair and snap_dir(data_dir).is_dir():
        fileutil.remove_stale_temp_files(snap_dir(data_dir))
    loaded = load_newest(snap_dir(data_dir), repair=repair, body=snapshot_body)
    contents = read_wal(wal_dir(data_dir), repair=repair)
    snap = loaded.snapshot if loaded is not None else None
    snap_index = snap.meta.index if snap is not None else 0
    if contents.snapshot is not None and contents.snapshot.index > snap_index:
        raise CorruptionError(
            f"wal in {wal_dir(data_dir)} records a snapshot at index {contents.snapshot.index} "
            f"but the newest valid snapshot in {snap_dir(data_dir)} is at index {snap_index}; {WAY_FORWARD}"
        )
    entries = [e for e in contents.entries if e.index > snap_index]
    if entries and entries[0].index != snap_index + 1:
        where = loaded.path if loaded is not None else wal_dir(data_dir)
        raise CorruptionError(
            f"log gap: the wal's first entry after the snapshot is index {entries[0].index} "
            f"but the snapshot {where} ends at index {snap_index}; {WAY_FORWARD}"
        )
    hs = contents.hard_state or HardState()
    if hs.commit < snap_index:
        hs = replace(hs, commit=snap_index)
    state = RecoveredState(snap, hs, entries)
    last = entries[-1].index if entries else snap_index
    logger.info(
        "recovered data_dir=%s snapshot_index=%d first_index=%d last_index=%d term=%d commit=%d torn_bytes=%d",
        data_dir,
        snap_index,
        snap_index + 1,
        last,
        hs.term,
        hs.commit,
        contents.torn_bytes_dropped,
    )
    return Recovery(state, contents, loaded.state_hash if loaded is not None else None)


def recover(data_dir: Path, repair: bool = True, snapshot_body: bool = True) -> RecoveredState:
    """
    The node's durable state: newest valid snapshot, hard state, entries after it.

    Args:
        repair: cut a torn tail (and clean crash leftovers) on disk; False only reads.
        snapshot_body: False verifies the snapshot but leaves its data empty (b"").

    Raises:
        CorruptionError: see the module docstring; the message names the file and offset.
    """
    return recover_for_writing(data_dir, repair, snapshot_body).state


def with_snapshot_membership(data_dir: Path, state: RecoveredState, bootstrap: ConfState) -> RecoveredState:
    """
    `state`, its snapshot given a membership if it was written without one.

    Older writers could write a snapshot whose membership is empty;
    a node starting from it never campaigns. Its membership is recovered from the log:
    `bootstrap` changed by every membership change up to the snapshot's index, read
    (read only) from the WAL, which must still hold the log from index 1 (it does when
    the snapshot was the first one its writer took; segments are removed only once a
    snapshot covers them whole). Safe: those entries are committed (a snapshot holds
    only committed entries), so they are the ones every member applied, and folding
    them is what this node does when it starts without a snapshot.

    Otherwise `state` is returned unchanged with an ERROR naming the snapshot: the node
    can still follow a leader, but never campaigns until a newer snapshot or membership
    change reaches it.

    NB: call it before anything writes to the WAL (the raft worker does, right after its
    handshake with the writer).
    """
    snap = state.snapshot
    if snap is None or snap.is_empty or has_membership(snap.meta.conf_state):
        return state
    try:
        entries = read_wal(wal_dir(data_dir), repair=False).entries
    except (StorageError, OSError) as exc:
        entries = []
        logger.warning("cannot read wal to recover a snapshot's membership data_dir=%s error=%s",
                       data_dir, exc)
    conf_state = membership_from_log(bootstrap, entries, snap.meta)
    if conf_state is None:
        logger.error(
            "snapshot has no membership and the log no longer holds it: this node will not "
            "campaign data_dir=%s snapshot_index=%d first_wal_index=%d",
            data_dir, snap.meta.index, entries[0].index if entries else 0,
        )
        return state
    logger.warning(
        "snapshot has no membership, recovered it from the log data_dir=%s snapshot_index=%d "
        "voters=%s learners=%s", data_dir, snap.meta.index, ",".join(conf_state.voters),
        ",".join(conf_state.learners))
    meta = replace(snap.meta, conf_state=conf_state)
    return replace(state, snapshot=Snapshot(meta, snap.data))
