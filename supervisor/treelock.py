"""
The tree lock: `cleanup()` still runs when the supervisor itself is SIGKILLed.

The supervisor normally runs `cleanup()` after its last child exited. SIGKILL skips
that; the children then exit through the lifeline, and whatever `setup()` made (shared
memory, sockets' folders) would outlive them. So the LAST process of the tree runs it:

- Before the first fork the supervisor opens an anonymous file (memfd) and takes an
  exclusive flock on it. Every child inherits that open file description, and with it
  the lock: the lock lasts while any process of the tree still holds the description
  (flock locks belong to the description and end when its last descriptor closes).
- A child whose lifeline reached EOF (`exit_orphaned`) opens the same file again (a new
  description, through /proc/self/fd), closes its inherited descriptor and blocks in
  flock on the new one. It gets the lock only once every other process of the tree has
  closed the inherited description, i.e. exited, and no sibling holds the lock. The
  first one to get it runs `cleanup()` and marks the file done (byte 0 = b"c"); the
  others see the mark and skip. Then each exits with ExitCode.LIFELINE.

A child that exits without `exit_orphaned` (a `Lifeline.POLL` child that just exits)
releases the description by exiting and never runs `cleanup()`; a THREAD sibling does.
A process forked by a child outside the supervisor (e.g. a snapshot writer) should call
`supervisor.child.leave_tree()` first, or `cleanup()` waits for it too.

Linux only (memfd_create and /proc/self/fd); elsewhere there is no tree lock and a
SIGKILLed supervisor's `cleanup()` never runs.

Never imports `concord`.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable

__all__ = ["exit_orphaned", "open_tree_lock"]

logger = logging.getLogger(__name__)

_DONE = b"c"


def open_tree_lock() -> int | None:
    """
    Supervisor side: the locked anonymous file every child inherits, or None where the
    platform has no memfd or /proc/self/fd.
    """
    create = getattr(os, "memfd_create", None)
    if create is None or not os.path.isdir("/proc/self/fd"):
        return None
    fd: int = create("supervisor-tree", 0)
    # NB: inheritable by forks only: memfd descriptors close on exec (Python's default).
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def exit_orphaned(tree_fd: int, cleanup: Callable[[], None] | None, name: str,
                  code: int) -> None:
    """
    Child side, once the supervisor is gone: wait until this is the last process of the
    tree, run `cleanup()` if no sibling ran it, then `os._exit(code)`. Never returns.
    """
    try:
        if tree_fd >= 0 and cleanup is not None:
            _last_one_cleans(tree_fd, cleanup, name)
    finally:
        os._exit(code)


def _last_one_cleans(tree_fd: int, cleanup: Callable[[], None], name: str) -> None:
    try:
        fresh = os.open(f"/proc/self/fd/{tree_fd}", os.O_RDWR)
    except OSError as exc:
        logger.warning("supervisor gone; cannot reopen the tree lock child=%s error=%s",
                       name, exc)
        return
    os.close(tree_fd)
    fcntl.flock(fresh, fcntl.LOCK_EX)  # every other process of the tree has exited
    if os.pread(fresh, 1, 0) == _DONE:
        return
    try:
        cleanup()
    except Exception:  # the child's last act: log once, exit anyway
        logger.exception("supervisor gone; cleanup failed in child=%s", name)
        return
    os.pwrite(fresh, _DONE, 0)
    logger.warning("supervisor gone; cleanup run by its last child=%s pid=%d", name,
                   os.getpid())
