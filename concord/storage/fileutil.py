"""
File helpers with the durability rules in one place: fdatasync, directory fsync, atomic
replace (write a temporary file, fsync it, rename it over the target, fsync the folder).

OS errors are translated into `concord.errors.StorageError` by the callers that know
which file they were handling; these helpers let `OSError` through.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

#: Called with a file descriptor to make its data durable (os.fdatasync by default).
#: Tests inject counting or blocking hooks; `fsync = false` uses `no_sync`.
SyncHook = Callable[[int], None]

TMP_SUFFIX = ".tmp"


def fdatasync(fd: int) -> None:
    """Flush file data (and the size) to stable storage."""
    os.fdatasync(fd)


def describe_os_error(exc: OSError) -> str:
    """`ENOSPC [Errno 28] No space left on device`: the errno's name first, for operators."""
    name = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    return f"{name} {exc}".strip()


def no_sync(fd: int) -> None:
    """The hook used when `fsync = false`: nothing is made durable."""


def fsync_dir(path: Path) -> None:
    """fsync a directory so that creates, renames and unlinks in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def warn_fsync_disabled(component: str, path: Path) -> None:
    """Say loudly that durability is off (tests and benchmarks only)."""
    logger.warning(
        "fsync is DISABLED: data is NOT durable, a crash or power loss can lose "
        "acknowledged writes; use only for tests and benchmarks component=%s path=%s",
        component,
        path,
    )


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of `data` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(
    path: Path,
    chunks: list[bytes],
    sync: bool = True,
    before_rename: Callable[[Path], None] | None = None,
) -> None:
    """
    Replace `path` with the concatenation of `chunks`, atomically and durably.

    The data goes to `<path>.tmp` first, is synced, renamed over `path`, and the folder
    is fsynced. A crash at any point leaves either the old file or the new one, plus at
    most a stray temporary file that `remove_stale_temp_files` cleans up.

    Args:
        sync: False when fsync is disabled (tests and benchmarks).
        before_rename: test hook called with the synced temporary file.
    """
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in chunks:
            write_all(fd, chunk)
        if sync:
            os.fsync(fd)  # NB: fsync, not fdatasync: the new inode's metadata matters too
    finally:
        os.close(fd)
    if before_rename is not None:
        before_rename(tmp)
    os.replace(tmp, path)
    if sync:
        fsync_dir(path.parent)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete `*.tmp` files left by a crash during `atomic_write`; log each one."""
    removed = []
    for tmp in sorted(folder.glob("*" + TMP_SUFFIX)):
        logger.warning("removing incomplete temporary file left by a crash path=%s bytes=%d", tmp, tmp.stat().st_size)
        tmp.unlink()
        removed.append(tmp)
    return removed
