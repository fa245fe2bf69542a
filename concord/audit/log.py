"""
The audit log writer: one per node, owned by the front door process (docs/observability-audit.md
says why there). Appends lines (concord/audit/record.py) with the hash chain, rotates the
live file by size, deletes rotated files past the retention, fsyncs per policy.

Files, in `[audit] dir` (created 0700; files 0600):

    audit-00000001.jsonl, audit-00000002.jsonl, ...   (file number, 8 digits, from 1)

The highest number is the live file; the others are rotated and never written again.
Each file starts with an `audit_open` line (`file`: its number, `reason`: "start" or
"rotate", `truncated_bytes` when a torn tail was cut at start) whose `prev` is the last
hash of the file before, so the chain runs across files. Deleting rotated files past the
retention writes an `audit_retention` line (`deleted`: the file names, `deleted_last_hash`:
the last hash of the newest deleted file), so `audit verify` can tell retention from a
removed file.

At start the writer continues the chain from the last complete line of the newest file;
bytes after the last newline (a line torn by a crash) are cut, and the count is recorded.

Buffering and fsync: `append` only buffers; `flush()` writes the buffer with one
os.write; `fsync = "always"`: flush fsyncs (the front door flushes before it sends the
replies of audited requests); "interval": a thread of the writing process fsyncs every
`fsync_interval_ms` when something was written (started by `tick()`); "never": the OS
decides.

Never raises on a full disk or an I/O error in `flush`: the lines stay buffered (up to
MAX_BUFFERED_LINES; beyond, the oldest are dropped and counted in `lost`, and `audit
verify` reports the hole), a warning is logged once, and the next flush retries: serving
clients comes first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from concord.audit.record import FORMAT_VERSION, OPEN, RETENTION, AuditKeys, seal

__all__ = ["AuditLog", "AuditOptions", "FILE_RE", "file_name", "list_files"]

log = logging.getLogger(__name__)

FILE_RE = re.compile(r"^audit-(\d{8})\.jsonl$")
MAX_BUFFERED_LINES = 100_000
FSYNC_POLICIES = ("always", "interval", "never")


def file_name(number: int) -> str:
    return f"audit-{number:08d}.jsonl"


def list_files(folder: Path) -> list[tuple[int, Path]]:
    """(number, path) of every audit file in `folder`, oldest first."""
    found = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    for name in names:
        match = FILE_RE.match(name)
        if match:
            found.append((int(match.group(1)), folder / name))
    return sorted(found)


@dataclass(frozen=True, slots=True)
class AuditOptions:
    """The writer's settings (from `[audit]`)."""

    folder: Path
    node: str
    max_file_bytes: int = 64 * 1024 * 1024
    retention_days: float = 30.0
    fsync: str = "interval"
    fsync_interval_ms: int = 1000

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {self.fsync!r}")


_second_text: list[object] = [-1, ""]  # (second, its "%Y-%m-%dT%H:%M:%S"): one strftime a second


def _timestamp(now: float) -> str:
    seconds = int(now)
    micros = int((now - seconds) * 1_000_000)
    if _second_text[0] != seconds:
        _second_text[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_second_text[1]}.{micros:06d}Z"


class AuditLog:
    """
    The writer. Not thread-safe: the front door's one thread owns it.

    Raises:
        OSError: the folder cannot be created or the live file opened (at start only).
    """

    def __init__(self, options: AuditOptions, keys: AuditKeys,
                 clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.keys = keys
        self._clock = clock
        self._buffer: list[str] = []
        self._lost = 0
        self._failing = False
        self._fd = -1
        self._size = 0
        self._dirty = False
        # NB: fsync = "interval" runs on a thread of its own (started by the first
        # tick, so in the process that writes): an fsync can take tens of ms on a busy
        # disk, and the front door must not stop routing meanwhile. The lock keeps the
        # fd from being swapped (rotation) or closed under a running fsync.
        self._fd_lock = threading.Lock()
        self._syncer: threading.Thread | None = None
        self._stop_syncer = threading.Event()
        options.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._number, self._seq, self._prev, truncated = self._recover()
        self._open(self._number + 1 if self._number else 1, "start", truncated)
        self.apply_retention()

    # -- start-up --------------------------------------------------------------------

    def _recover(self) -> tuple[int, int, str, int]:
        """(newest file number, last seq, last hash, torn bytes cut) of the folder."""
        files = list_files(self.options.folder)
        if not files:
            return 0, 0, "", 0
        number, path = files[-1]
        with open(path, "rb") as handle:
            data = handle.read()
        end = data.rfind(b"\n") + 1
        truncated = len(data) - end
        if truncated:
            log.warning("audit log: cut a torn last line path=%s bytes=%d", path, truncated)
            os.truncate(path, end)
        start = data.rfind(b"\n", 0, end - 1) + 1 if end else 0
        try:
            last = json.loads(data[start:end])
            seq, prev = int(last["seq"]), str(last["hash"])
        except (ValueError, KeyError, TypeError):
            # NB: carried on, not fatal: `audit verify` reports the bad line; the node
            # keeps serving. The chain restarts from "" and the next line says so.
            log.warning("audit log: last line unreadable, chain restarts path=%s", path)
            return number, 0, "", truncated
        return number, seq, prev, truncated

    def _open(self, number: int, reason: str, truncated: int = 0) -> None:
        path = self.options.folder / file_name(number)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with self._fd_lock:
            if self._fd >= 0:
                os.close(self._fd)
            self._fd, self._number, self._size = fd, number, os.fstat(fd).st_size
        extra: dict[str, object] = {"file": number, "reason": reason}
        if truncated:
            extra["truncated_bytes"] = truncated
        self._event(OPEN, extra)
        self.flush(sync=True)
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.options.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # -- writing ---------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The seq of the last line appended."""
        return self._seq

    @property
    def lost(self) -> int:
        """Lines dropped because the disk failed for longer than the buffer lasts."""
        return self._lost

    def append(self, fields: Mapping[str, object]) -> None:
        """Buffer one line made of `fields` plus the common ones (module docstring)."""
        self._seq += 1
        obj: dict[str, object] = {
            "v": FORMAT_VERSION,
            "seq": self._seq,
            "event_id": f"{self.options.node}:{self._seq}",
            "time": _timestamp(self._clock()),
            "node": self.options.node,
        }
        obj.update(fields)
        line, self._prev = seal(self.keys, obj, self._prev)
        self._buffer.append(line)
        if len(self._buffer) > MAX_BUFFERED_LINES:
            del self._buffer[0]
            self._lost += 1

    def _event(self, op: str, extra: Mapping[str, object]) -> None:
        self.append({"op": op, **extra})

    @property
    def pending(self) -> bool:
        """Lines buffered and not yet written."""
        return bool(self._buffer)

    def flush(self, sync: bool | None = None) -> bool:
        """
        Write the buffered lines; fsync if `sync` (None: per the fsync policy). Rotates
        the live file once it is over `max_file_bytes`. Returns False if the disk failed
        (the lines stay buffered).
        """
        if sync is None:
            sync = self.options.fsync == "always"
        if self._buffer:
            data = ("\n".join(self._buffer) + "\n").encode("utf-8", "surrogatepass")
            try:
                written = os.write(self._fd, data)
                if written != len(data):
                    raise OSError(f"short write {written} of {len(data)} bytes")
            except OSError as exc:
                if not self._failing:
                    log.warning("audit log write failed, lines kept in memory path=%s error=%s",
                                self.options.folder / file_name(self._number), exc)
                self._failing = True
                return False
            self._failing = False
            self._buffer.clear()
            self._size += len(data)
            self._dirty = True
        if sync and self._dirty:
            self._fsync()
        if self._size > self.options.max_file_bytes:
            self._rotate()
        return True

    def _fsync(self) -> None:
        self._dirty = False
        with self._fd_lock:
            if self._fd < 0:
                return
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._dirty = True
                log.warning("audit log fsync failed error=%s", exc)

    def tick(self) -> None:
        """Write what is buffered; with fsync = "interval", make sure the syncer runs."""
        self.flush(sync=False)
        if self.options.fsync == "interval" and self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_loop, name="audit-fsync", daemon=True)
            self._syncer.start()

    def _sync_loop(self) -> None:
        interval_s = self.options.fsync_interval_ms / 1000.0
        while not self._stop_syncer.wait(interval_s):
            if self._dirty:
                self._fsync()

    def _rotate(self) -> None:
        self._fsync()
        self._open(self._number + 1, "rotate")
        self.apply_retention()

    def apply_retention(self) -> list[str]:
        """Delete rotated files older than `retention_days` (by mtime); returns their names."""
        days = self.options.retention_days
        if days <= 0:
            return []
        cutoff = self._clock() - days * 86400.0
        deleted: list[str] = []
        last_hash = ""
        for number, path in list_files(self.options.folder):
            if number >= self._number:
                break
            try:
                if path.stat().st_mtime >= cutoff:
                    break  # NB: oldest first: never leave a hole in the sequence
                last_hash = _last_hash(path)
                path.unlink()
            except OSError as exc:
                log.warning("audit log: cannot apply retention path=%s error=%s", path, exc)
                break
            deleted.append(path.name)
        if deleted:
            log.info("audit log: retention deleted files=%s", ",".join(deleted))
            self._event(RETENTION, {"deleted": deleted, "deleted_last_hash": last_hash})
            self.flush(sync=True)
        return deleted

    def close(self) -> None:
        """Write and fsync what is buffered; close the file. Idempotent."""
        if self._fd < 0:
            return
        if self._syncer is not None:
            self._stop_syncer.set()
            self._syncer.join()
        self.flush(sync=True)
        with self._fd_lock:
            os.close(self._fd)
            self._fd = -1


def _last_hash(path: Path) -> str:
    with open(path, "rb") as handle:
        data = handle.read()
    end = data.rfind(b"\n")
    start = data.rfind(b"\n", 0, end) + 1
    try:
        return str(json.loads(data[start:end])["hash"])
    except (ValueError, KeyError, TypeError):
        return ""
