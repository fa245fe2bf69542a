"""
The backup file of `concord backup`, format version 1 (docs/backup.md, docs/formats.md).

    offset  size        field
    0       4           magic        b"CBAK"
    4       1           version      BACKUP_VERSION (1)
    5       3           reserved     zero
    8       4           header_len   u32 little-endian
    12      header_len  header       msgpack map (below)
    ...     body_len    body         a node snapshot file, exactly as the node wrote it
                                     (concord.storage.snapshot "CSNP" v1: its own xxh3
                                     checksum, zlib-compressed state-machine bytes)
    end-32  32          sha256       SHA-256 of every byte before it

    header = {"format": 1, "cluster_id": str (the source cluster's id; nil for a node
              snapshot that carries none: an older release's),
              "node": str, "index": int, "term": int, "revision": int,
              "created_at": float (unix seconds), "keys": int, "state_hash": int (the
              node state machine's, as in the snapshot file), "kv_state_hash": int (the
              kv state hash alone: what `hash_kv` answers at `index`), "body_bytes": int,
              "members": [str, ...] (voters at the index)}

Verification (`verify`) checks, in order: the magic and version, the header, the length,
the SHA-256 over the whole file, then decodes the body completely (snapshot checksum,
zlib, every record) and checks that the state hash and key count match the header. Any
flipped byte or truncation fails one of these and raises CorruptionError naming the
file and the check.

Pure file code: no sockets.
"""

from __future__ import annotations

import collections
import hashlib
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack

from concord.errors import CorruptionError

if TYPE_CHECKING:
    from concord.node.members import NodeStateMachine

__all__ = ["BACKUP_MAGIC", "BACKUP_SUFFIX", "BACKUP_VERSION", "BackupHeader", "Decoded",
           "Summary", "decode_body", "read_header", "summarize_body", "verify", "write_backup"]

BACKUP_MAGIC = b"CBAK"
BACKUP_VERSION = 1
BACKUP_SUFFIX = ".cbak"
_PREFIX = struct.Struct("<4sB3xI")
_DIGEST = 32


@dataclass(frozen=True, slots=True)
class BackupHeader:
    node: str
    index: int
    term: int
    revision: int
    created_at: float
    keys: int
    state_hash: int
    kv_state_hash: int
    body_bytes: int
    members: tuple[str, ...]
    cluster_id: str | None = None

    def to_map(self) -> dict[str, object]:
        return {"format": BACKUP_VERSION, "cluster_id": self.cluster_id, "node": self.node,
                "index": self.index, "term": self.term, "revision": self.revision,
                "created_at": self.created_at, "keys": self.keys, "state_hash": self.state_hash,
                "kv_state_hash": self.kv_state_hash, "body_bytes": self.body_bytes, "members": list(self.members)}


@dataclass(frozen=True, slots=True)
class Decoded:
    """A backup body decoded: the state machine restored from it, and its snapshot meta."""

    index: int
    term: int
    members: tuple[str, ...]
    state_hash: int
    kv_state_hash: int
    revision: int
    keys: int
    last_ts_ms: int
    machine: NodeStateMachine  # the state, rebuilt (every record checked against the hash)

    def content_hash(self) -> tuple[int, int]:
        """
        (content hash, live keys) of the state at the backup's cluster time
        (concord.kv.content): what `concord check hash --content` answers on a cluster
        holding the same keys, values and TTLs, whatever their revisions.
        """
        from concord.kv.content import content_hash  # noqa: PLC0415

        return content_hash(self.machine.kv.records(), self.last_ts_ms)

    def records(self) -> Iterator[tuple[str, object, int]]:
        """(key, value, expires_at_ms or 0) of every user key, in key order, values decoded."""
        from concord.kv.values import record_value  # noqa: PLC0415

        for r in self.machine.kv.records():
            yield r.key, record_value(r), r.expires_at_ms


def decode_body(body: bytes, name: str) -> Decoded:
    """
    Decode a node snapshot file's bytes completely.

    Raises:
        CorruptionError: any check of the snapshot file or of the state fails.
    """
    from concord.node.members import NodeStateMachine  # noqa: PLC0415

    data, index, term, voters, snapshot_hash = _read_body(body, name)
    machine = NodeStateMachine()
    try:
        machine.restore(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptionError(f"backup {name}: the state does not decode: {exc}") from exc
    state_hash = machine.state_hash()
    if snapshot_hash is not None and snapshot_hash != state_hash:
        raise CorruptionError(f"backup {name}: state hash {state_hash:#x} differs from the "
                              f"snapshot's {snapshot_hash:#x}")
    kv = machine.kv
    return Decoded(index, term, voters, state_hash, kv.state_hash(), kv.revision,
                   len(kv), kv.last_ts_ms, machine)


@dataclass(frozen=True, slots=True)
class Summary:
    """What `backup create` needs for the header, read without rebuilding the state."""

    index: int
    term: int
    members: tuple[str, ...]
    state_hash: int
    kv_state_hash: int
    revision: int
    keys: int
    cluster_id: str | None


def _read_body(body: bytes, name: str) -> tuple[bytes, int, int, tuple[str, ...], int | None]:
    """(state bytes, index, term, voters, state hash) of a snapshot file's bytes, checked."""
    from concord.storage.snapshot import read_snapshot  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="concord-backup-") as folder:
        path = Path(folder) / "body.snap"
        path.write_bytes(body)
        try:
            loaded = read_snapshot(path)
        except CorruptionError as exc:
            raise CorruptionError(f"backup {name}: body: {exc}") from exc
    meta = loaded.snapshot.meta
    return loaded.snapshot.data, meta.index, meta.term, tuple(meta.conf_state.voters), loaded.state_hash


def summarize_body(body: bytes, name: str) -> Summary:
    """
    The header fields of a snapshot file's bytes: its checksum and compression are
    checked, and the kv snapshot's own header and key count are read (docs/formats/kv.md:
    "CKVS", version, state hash, then msgpack [applied, revision, last_ts, [user rows]...])
    inside the node snapshot ("CNDS" + msgpack [2, kv bytes, addresses, cluster_id], or
    version 1 without cluster_id; concord.node.members),
    without rebuilding the state (`verify` does that).

    Raises:
        CorruptionError: a check fails or the layout is not the expected version.
    """
    from concord.kv.machine import _SNAPSHOT_FIELDS, _SNAPSHOT_HEADER, SNAPSHOT_MAGIC  # noqa: PLC0415
    from concord.kv.snapshot import count_user_records  # noqa: PLC0415
    from concord.node.members import SNAPSHOT_MAGIC as NODE_MAGIC  # noqa: PLC0415

    data, index, term, voters, state_hash = _read_body(body, name)
    cluster_id = None
    try:
        kv_bytes = data
        if data.startswith(NODE_MAGIC):
            node = msgpack.unpackb(memoryview(data)[len(NODE_MAGIC):], raw=False)
            version, kv_bytes = node[0], node[1]
            if (version, len(node)) not in ((1, 3), (2, 4)) or not isinstance(kv_bytes, bytes):
                raise ValueError(f"node snapshot version {version}")
            cluster_id = node[3] if version == 2 else None
        magic, kv_version, kv_hash = _SNAPSHOT_HEADER.unpack_from(kv_bytes)
        if magic != SNAPSHOT_MAGIC or kv_version not in _SNAPSHOT_FIELDS:
            raise ValueError(f"kv snapshot magic {magic!r} version {kv_version}")
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(memoryview(kv_bytes)[_SNAPSHOT_HEADER.size:])
        if unpacker.read_array_header() != _SNAPSHOT_FIELDS[kv_version]:
            raise ValueError(f"kv snapshot is not a {_SNAPSHOT_FIELDS[kv_version]}-element array")
        unpacker.unpack()  # applied index
        revision = unpacker.unpack()
        unpacker.unpack()  # cluster time
        keys = count_user_records(unpacker, kv_version)
    except (ValueError, TypeError, struct.error, msgpack.UnpackException) as exc:
        raise CorruptionError(f"backup {name}: the state does not decode: {exc}") from exc
    if state_hash is None or not isinstance(revision, int):
        raise CorruptionError(f"backup {name}: the snapshot carries no state hash or revision")
    if cluster_id is not None and not isinstance(cluster_id, str):
        raise CorruptionError(f"backup {name}: cluster id {cluster_id!r} is not a string")
    return Summary(index, term, voters, state_hash, kv_hash, revision, keys, cluster_id)


def write_backup(path: Path, header: BackupHeader, body: bytes) -> None:
    """Write the backup file atomically: temp file, fsync, rename, folder fsync."""
    packed = msgpack.packb(header.to_map(), use_bin_type=True)
    digest = hashlib.sha256()
    parts = [_PREFIX.pack(BACKUP_MAGIC, BACKUP_VERSION, len(packed)), packed, body]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                digest.update(part)
                out.write(part)
            out.write(digest.digest())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_header(path: Path) -> tuple[BackupHeader, int]:
    """
    The header and the body's offset, without reading the body (`backup list`).

    Raises:
        CorruptionError: bad magic, version or header.
    """
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size:
            raise CorruptionError(f"backup {path}: truncated header ({len(prefix)} bytes)")
        magic, version, header_len = _PREFIX.unpack(prefix)
        if magic != BACKUP_MAGIC:
            raise CorruptionError(f"backup {path}: bad magic {magic!r} (not a Concord backup)")
        if version != BACKUP_VERSION:
            raise CorruptionError(f"backup {path}: format version {version} is not {BACKUP_VERSION}")
        raw = f.read(header_len)
    if len(raw) < header_len:
        raise CorruptionError(f"backup {path}: truncated header")
    try:
        obj = msgpack.unpackb(raw, raw=False)
        header = BackupHeader(
            node=str(obj["node"]), index=int(obj["index"]), term=int(obj["term"]),
            revision=int(obj["revision"]), created_at=float(obj["created_at"]),
            keys=int(obj["keys"]), state_hash=int(obj["state_hash"]),
            kv_state_hash=int(obj["kv_state_hash"]),
            body_bytes=int(obj["body_bytes"]), members=tuple(str(m) for m in obj["members"]),
            cluster_id=obj.get("cluster_id"),
        )
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise CorruptionError(f"backup {path}: header does not decode: {exc}") from exc
    return header, _PREFIX.size + header_len


def verify(path: Path, values: bool = True) -> tuple[BackupHeader, Decoded]:
    """
    Check everything (module docstring); `values`: also decode every value (the state
    rebuild already checks every record's bytes against the state hash).

    Raises:
        CorruptionError: naming the file and the failed check.
    """
    header, offset = read_header(path)
    data = path.read_bytes()
    expected = offset + header.body_bytes + _DIGEST
    if len(data) != expected:
        raise CorruptionError(f"backup {path}: {len(data)} bytes, expected {expected} (truncated or padded)")
    if hashlib.sha256(data[:-_DIGEST]).digest() != data[-_DIGEST:]:
        raise CorruptionError(f"backup {path}: SHA-256 mismatch (the file was altered)")
    decoded = decode_body(data[offset:-_DIGEST], str(path))
    if ((decoded.state_hash, decoded.kv_state_hash, decoded.keys, decoded.index, decoded.machine.cluster_id)
            != (header.state_hash, header.kv_state_hash, header.keys, header.index, header.cluster_id)):
        raise CorruptionError(f"backup {path}: body (index {decoded.index}, {decoded.keys} keys) "
                              f"does not match its header (index {header.index}, {header.keys} keys)")
    if values:
        try:
            collections.deque(decoded.records(), maxlen=0)  # decode every value, keep none
        except (ValueError, TypeError, zlib.error, msgpack.UnpackException) as exc:
            raise CorruptionError(f"backup {path}: a value does not decode: {exc}") from exc
    return header, decoded
