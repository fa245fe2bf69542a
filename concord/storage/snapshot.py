"""
Snapshot files: a checksummed header, the snapshot position and membership, and the
zlib-compressed state-machine bytes. Written atomically (temporary file, fsync, rename,
folder fsync); the previous snapshots are kept until a new one is complete (the newest
`keep`, default 2, are kept).

File `<data_dir>/snap/<index:016x>-<term:016x>.snap` (little-endian):

    offset  size      field
    0       4         magic       b"CSNP"
    4       1         version     SNAPSHOT_VERSION (1)
    5       3         reserved    zero
    8       4         info_len    u32, length of `info`
    12      8         body_len    u64, length of `body`
    20      8         checksum    u64, xxh3_64 of bytes 0..19, then info, then body
    28      info_len  info        msgpack [1, snapshot_meta (concord.storage.codec), state_hash:int,
                                  raw_len:uint (uncompressed body length)]
    ...     body_len  body        zlib stream of the state machine's snapshot() bytes

A file that fails any check raises CorruptionError naming the file; loading falls back
to the previous snapshot with a WARNING (and renames the bad file to `*.corrupt` when
repairing), never silently.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import xxhash

from concord.storage import codec
from concord.errors import CorruptionError, DiskError, ProtocolError, StorageError
from concord.raft.messages import Snapshot, SnapshotMeta
from concord.storage import faults, fileutil
from concord.storage.format import WAY_FORWARD

logger = logging.getLogger(__name__)

SNAPSHOT_MAGIC = b"CSNP"
SNAPSHOT_VERSION = 1
SNAPSHOT_SUFFIX = ".snap"
CORRUPT_SUFFIX = ".corrupt"
_HEADER = struct.Struct("<4sB3xIQQ")
_HEADER_BODY = struct.Struct("<4sB3xIQ")
HEADER_SIZE = _HEADER.size  # 28
INFO_VERSION = 1
DEFAULT_KEEP = 2
#: zlib level of snapshot bodies: 1, not zlib's 6. On the bench's 1M-key state level 6
#: took 1.5 µs of CPU per key to compress, level 1 0.24 µs, for a file about 25 % larger
#: (docs/benchmarks.md "A bounded replay"); a snapshot is retaken every few MiB of writes,
#: while its size only costs disk and a transfer to a follower that fell behind.
DEFAULT_LEVEL = 1


@dataclass(frozen=True, slots=True)
class LoadedSnapshot:
    """A snapshot read back from disk, with the state hash recorded when it was taken."""

    snapshot: Snapshot
    state_hash: int | None
    path: Path


def snapshot_name(index: int, term: int) -> str:
    return f"{index:016x}-{term:016x}{SNAPSHOT_SUFFIX}"


def list_snapshots(snap_dir: Path) -> list[tuple[int, int, Path]]:
    """(index, term, path) of every complete-looking snapshot file, oldest first."""
    found = []
    if not snap_dir.is_dir():
        return []
    for path in snap_dir.iterdir():
        name = path.name
        if not name.endswith(SNAPSHOT_SUFFIX):
            continue
        parts = name[: -len(SNAPSHOT_SUFFIX)].split("-")
        if len(parts) != 2:
            continue
        try:
            found.append((int(parts[0], 16), int(parts[1], 16), path))
        except ValueError:
            continue
    found.sort()
    return found


def encode_snapshot_file(snapshot: Snapshot, state_hash: int | None, level: int = DEFAULT_LEVEL) -> list[bytes]:
    """The chunks of a snapshot file (header, info, body)."""
    body = zlib.compress(snapshot.data, level)
    info = codec.packb([INFO_VERSION, codec.snapshot_meta_to_obj(snapshot.meta), state_hash, len(snapshot.data)])
    head = _HEADER_BODY.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, len(info), len(body))
    h = xxhash.xxh3_64(head)
    h.update(info)
    h.update(body)
    return [head + struct.pack("<Q", h.intdigest()), info, body]


def write_snapshot(
    snap_dir: Path,
    snapshot: Snapshot,
    state_hash: int | None,
    sync: bool = True,
    level: int = DEFAULT_LEVEL,
    before_rename: Callable[[Path], None] | None = None,
) -> Path:
    """
    Write `snapshot` atomically and durably; older snapshots are untouched (see `prune`).

    Returns:
        The path of the new snapshot file.

    Raises:
        StorageError: the file could not be written.
    """
    path = snap_dir / snapshot_name(snapshot.meta.index, snapshot.meta.term)
    try:
        if not snap_dir.is_dir():
            snap_dir.mkdir(parents=True)
            if sync:
                fileutil.fsync_dir(snap_dir.parent)
        fileutil.atomic_write(
            path,
            encode_snapshot_file(snapshot, state_hash, level),
            sync,
            _with_fault_seam(before_rename),
        )
    except OSError as exc:
        raise DiskError(f"cannot write snapshot {path}: {fileutil.describe_os_error(exc)}") from exc
    return path


def _with_fault_seam(before_rename: Callable[[Path], None] | None) -> Callable[[Path], None]:
    """The rename hook, behind the test-only seam: a fault leaves the temp file, as ENOSPC would."""

    def hook(tmp: Path) -> None:
        faults.check("snapshot_write")
        if before_rename is not None:
            before_rename(tmp)

    return hook


def _bad(path: Path, reason: str) -> CorruptionError:
    return CorruptionError(f"snapshot file {path} is corrupt at offset 0: {reason}")


def read_snapshot(path: Path, body: bool = True) -> LoadedSnapshot:
    """
    Read and verify one snapshot file.

    Args:
        body: False verifies the whole file (checksum) but does not decompress the body:
            the returned snapshot's `data` is empty (the log writer needs only the meta).

    Raises:
        CorruptionError: the file is truncated, fails its checksum or does not decode.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read snapshot {path}: {exc}") from exc
    if len(data) < HEADER_SIZE:
        raise _bad(path, f"{len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, info_len, body_len, checksum = _HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC:
        raise _bad(path, f"bad magic {magic!r}")
    if version != SNAPSHOT_VERSION:
        raise _bad(path, f"unsupported snapshot version {version} (this build reads {SNAPSHOT_VERSION})")
    if HEADER_SIZE + info_len + body_len != len(data):
        raise _bad(path, f"length {len(data)} does not match header ({HEADER_SIZE}+{info_len}+{body_len})")
    h = xxhash.xxh3_64(data[:20])
    h.update(data[HEADER_SIZE:])
    if h.intdigest() != checksum:
        raise _bad(path, "checksum mismatch")
    info_bytes = data[HEADER_SIZE : HEADER_SIZE + info_len]
    try:
        info = codec.unpackb(info_bytes, "snapshot info")
        if not isinstance(info, list) or len(info) != 4 or info[0] != INFO_VERSION:
            raise _bad(path, f"unsupported or malformed info block {info!r:.80}")
        meta: SnapshotMeta = codec.snapshot_meta_from_obj(info[1])
    except ProtocolError as exc:
        raise _bad(path, str(exc)) from exc
    state_hash, raw_len = info[2], info[3]
    if state_hash is not None and type(state_hash) is not int:
        raise _bad(path, "state hash is not an int")
    if not body:
        return LoadedSnapshot(Snapshot(meta, b""), state_hash, path)
    try:
        raw = zlib.decompress(data[HEADER_SIZE + info_len :])
    except zlib.error as exc:
        raise _bad(path, f"body does not decompress ({exc})") from exc
    if len(raw) != raw_len:
        raise _bad(path, f"body is {len(raw)} bytes, header says {raw_len}")
    return LoadedSnapshot(Snapshot(meta, raw), state_hash, path)


def load_newest(snap_dir: Path, repair: bool = True, body: bool = True) -> LoadedSnapshot | None:
    """
    The newest valid snapshot, or None if there is none at all (`body`: see read_snapshot).

    A bad newest file is reported with a WARNING and the previous one is used (the bad
    file is renamed to `*.corrupt` when `repair`). If every snapshot file is bad,
    CorruptionError is raised: starting from an empty state would lose data.
    """
    candidates = list_snapshots(snap_dir)
    errors: list[str] = []
    for index, term, path in reversed(candidates):
        try:
            loaded = read_snapshot(path, body)
        except CorruptionError as exc:
            logger.warning("skipping bad snapshot, falling back to the previous one file=%s error=%s", path, exc)
            errors.append(str(exc))
            if repair:
                path.rename(path.with_name(path.name + CORRUPT_SUFFIX))
            continue
        if (loaded.snapshot.meta.index, loaded.snapshot.meta.term) != (index, term):
            raise _bad(path, f"file name says index {index} term {term}, contents disagree")
        return loaded
    if errors:
        raise CorruptionError(f"no valid snapshot in {snap_dir}: {'; '.join(errors)}; {WAY_FORWARD}")
    return None


def prune(snap_dir: Path, keep: int = DEFAULT_KEEP, sync: bool = True) -> list[Path]:
    """Delete all but the newest `keep` snapshot files; `*.corrupt` files are left for the operator."""
    snaps = list_snapshots(snap_dir)
    doomed = [path for _, _, path in snaps[: max(0, len(snaps) - keep)]]
    for path in doomed:
        try:
            path.unlink()
        except OSError as exc:
            raise StorageError(f"cannot remove old snapshot {path}: {exc}") from exc
    if doomed:
        if sync:
            try:
                fileutil.fsync_dir(snap_dir)
            except OSError as exc:
                raise StorageError(f"cannot fsync snapshot folder {snap_dir}: {exc}") from exc
        logger.info("removed old snapshots count=%d kept=%d", len(doomed), keep)
    return doomed

