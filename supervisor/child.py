"""
The child side of supervision: bootstrap after fork, the lifeline, and READY.

Everything here runs in a CHILD process. The supervisor forks; `bootstrap` then closes the
supervisor's private file descriptors, resets signal dispositions, starts the lifeline
watcher and calls the child's target.

The lifeline. The supervisor holds the only write end of one pipe; every child holds its
read end and nothing is ever written to it. When the supervisor dies, however it dies
(SIGKILL included), the kernel closes the write end and the read end becomes readable (EOF).
A child learns of it in one of two ways, chosen by `ChildSpec.lifeline`:

- `Lifeline.THREAD` (default): a daemon thread blocks in `os.read(lifeline_fd)` and calls
  `exit_orphaned()` on EOF. Nothing to do in the child's code.
- `Lifeline.POLL`: no thread. The child registers `lifeline_fd()` in its own poller, e.g.
  `zmq.Poller().register(lifeline_fd(), zmq.POLLIN)` or
  `selectors.DefaultSelector().register(lifeline_fd(), EVENT_READ)`, and exits when it
  becomes readable (`supervisor_alive()` tells), best with `exit_orphaned()`. For
  single-threaded children.

`exit_orphaned()` makes the last process of the tree run the supervisor's `cleanup()`
(supervisor/treelock.py), then exits with ExitCode.LIFELINE.

Signals in a child: SIGINT is ignored (a terminal's Ctrl-C reaches the whole process
group; the supervisor then stops children in order with SIGTERM); SIGTERM has the default
action unless the child installs its own handler to drain.

Never imports `concord`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from supervisor.readiness import InfoValue, encode_ready
from supervisor.spec import ChildSpec, ExitCode, Lifeline
from supervisor.treelock import exit_orphaned as _exit_orphaned

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChildContext:
    """What a supervised child knows about its supervisor."""

    name: str
    lifeline_fd: int
    ready_fd: int
    previous_info: Mapping[str, InfoValue]
    restarts: int
    tree_fd: int = -1  # the inherited tree lock (supervisor/treelock.py), -1: none
    cleanup: Callable[[], None] | None = None  # the supervisor's, for exit_orphaned()


_context: ChildContext | None = None


def context() -> ChildContext | None:
    """This process's supervision context, or None when it is not a supervised child."""
    return _context


def child_name() -> str | None:
    """The supervised child's name, or None outside a supervised child."""
    return None if _context is None else _context.name


def previous_info() -> Mapping[str, InfoValue]:
    """
    The READY info this child's previous incarnation reported ({} on the first start or
    outside a supervisor).

    A restarted child uses it to re-bind what it bound before: a port configured as 0
    ("any free port") keeps the real port it got first, so the endpoints printed on the
    ready line stay true across restarts.
    """
    return {} if _context is None else _context.previous_info


def restart_count() -> int:
    """How many times this child was restarted before this incarnation (0 outside)."""
    return 0 if _context is None else _context.restarts


def lifeline_fd() -> int:
    """
    The read end of the lifeline pipe, for the child's own poller (Lifeline.POLL).

    Raises:
        RuntimeError: not in a supervised child.
    """
    if _context is None:
        raise RuntimeError("not running under a supervisor")
    return _context.lifeline_fd


def supervisor_alive() -> bool:
    """
    True while the supervisor lives (its lifeline has not reached EOF); True outside one.
    """
    if _context is None:
        return True
    readable, _, _ = select.select([_context.lifeline_fd], [], [], 0)
    return not readable


def exit_orphaned() -> None:
    """
    Exit because the supervisor is gone (ExitCode.LIFELINE); the last process of the tree
    first runs the supervisor's `cleanup()` (supervisor/treelock.py). Never returns.
    """
    if _context is None:
        os._exit(ExitCode.LIFELINE)
    _exit_orphaned(_context.tree_fd, _context.cleanup, _context.name, ExitCode.LIFELINE)


def leave_tree() -> None:
    """
    In a process a child forked by itself (not through the supervisor), first thing:
    close the inherited tree lock, so that an orphaned tree's `cleanup()` does not wait
    for this process. No-op outside a supervised child.
    """
    if _context is not None and _context.tree_fd >= 0:
        try:
            os.close(_context.tree_fd)
        except OSError:
            pass  # already closed
    _set_tree_fd(-1)


def _set_tree_fd(fd: int) -> None:
    global _context
    if _context is not None:
        _context = dataclasses.replace(_context, tree_fd=fd)


def notify_ready(info: Mapping[str, InfoValue] | None = None) -> bool:
    """
    Tell the supervisor this child serves, with its endpoint info (a small dict).

    Call it again after a restart: the supervisor records the newest info.

    Returns:
        True if sent; False when not running under a supervisor (e.g. in-process tests)
        or when the supervisor has died.

    Raises:
        supervisor.readiness.ReadinessProtocolError: info is not str -> str|int|bool
            or too large.
    """
    frame = encode_ready(info or {})
    if _context is None:
        return False
    # NB: one write of <= PIPE_BUF bytes is atomic; the supervisor reads continuously.
    try:
        os.write(_context.ready_fd, frame)
    except BrokenPipeError:
        return False  # the supervisor is gone; the lifeline ends this process
    return True


def _watch_lifeline(fd: int) -> None:
    while True:
        try:
            data = os.read(fd, 1)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        if not data:
            # The supervisor is gone: exit now (os._exit: no atexit handlers that could
            # block on resources the supervisor owned); the last one out cleans up.
            exit_orphaned()


def start_lifeline_thread(fd: int) -> threading.Thread:
    """Start the daemon thread that exits the process when the lifeline reaches EOF."""
    thread = threading.Thread(
        target=_watch_lifeline, args=(fd,), name="supervisor-lifeline", daemon=True
    )
    thread.start()
    return thread


def bootstrap(
    spec: ChildSpec,
    lifeline_read_fd: int,
    ready_write_fd: int,
    private_fds: tuple[int, ...],
    previous: Mapping[str, InfoValue] | None = None,
    restarts: int = 0,
    tree_fd: int = -1,
    cleanup: Callable[[], None] | None = None,
) -> None:
    """
    First code run in a freshly forked child: isolate it, then run `spec.target`.

    Args:
        spec: what to run.
        lifeline_read_fd: read end of the lifeline pipe (kept).
        ready_write_fd: write end of this child's READY pipe (kept).
        private_fds: the supervisor's own descriptors (lifeline write end, its selector,
            signal wake-up pipe, other children's READY pipes): closed here, so that no
            sibling ever keeps the lifeline's write end open.
        previous: READY info of the previous incarnation (see `previous_info`).
        restarts: restarts of this child so far.
        tree_fd: the inherited tree lock (kept; -1: none), see supervisor/treelock.py.
        cleanup: the supervisor's cleanup(), run by the tree's last process after the
            supervisor died.
    """
    global _context
    for fd in private_fds:
        try:
            os.close(fd)
        except OSError:
            pass  # already closed by the fork machinery: nothing to release
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    if spec.stdout_to_stderr:
        sys.stdout.flush()
        os.dup2(2, 1)
    _context = ChildContext(
        spec.name, lifeline_read_fd, ready_write_fd, dict(previous or {}), restarts,
        tree_fd, cleanup,
    )
    _set_process_name(spec.name)
    if spec.lifeline is Lifeline.THREAD:
        start_lifeline_thread(lifeline_read_fd)
    spec.target(*spec.args)


def _set_process_name(name: str) -> None:
    """Show the child's name in ps, top and psutil (Linux: /proc/self/comm, 15 bytes)."""
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as f:
            f.write(name[:15])
    except OSError:
        pass  # not Linux, or /proc is not mounted: the name is a convenience only
