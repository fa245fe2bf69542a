"""
What to supervise and how: child specs, restart policies, strategies, intensity, exit codes.

Pure data. Never starts a process, opens a file or reads the clock; `supervisor.supervisor`
interprets these values. Knows nothing about Raft or keys (it imports nothing from
`concord`).

Vocabulary (Erlang/OTP's, which this package follows):

- a *child* is one OS process running `target(*args)`;
- a *group* is an ordered list of children with one restart *strategy*;
- the supervisor starts groups in order and each group's children in order, and stops them
  in exactly the reverse order;
- *restart intensity*: more than `max_restarts` restarts within `window_s` seconds means
  something is badly wrong: the supervisor stops everything cleanly and exits with
  `ExitCode.INTENSITY`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Callable

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class Restart(enum.Enum):
    """When a child that exited is started again."""

    PERMANENT = "permanent"
    """Always restarted, whatever its exit code."""
    TRANSIENT = "transient"
    """Restarted only after an abnormal exit (non-zero code or killed by a signal)."""
    TEMPORARY = "temporary"
    """Never restarted; its exit is logged and forgotten."""


class Strategy(enum.Enum):
    """Which siblings restart with a child that exited (within its group only)."""

    ONE_FOR_ONE = "one_for_one"
    """Only the child that exited restarts (e.g. a read worker)."""
    REST_FOR_ONE = "rest_for_one"
    """The child and every sibling started after it restart, in start order."""
    ONE_FOR_ALL = "one_for_all"
    """Every child of the group restarts, in start order."""


class Lifeline(enum.Enum):
    """How a child notices that its supervisor died (see `supervisor.child`)."""

    THREAD = "thread"
    """A daemon thread in the child blocks on the lifeline pipe and `os._exit`s on EOF."""
    POLL = "poll"
    """The child adds `supervisor.child.lifeline_fd()` to its own poller and exits itself."""


class ExitCode(enum.IntEnum):
    """
    Exit codes of a supervisor process (and of a child whose lifeline fired).

    They are part of the command-line contract: scripts and tests depend on them.
    """

    OK = 0
    """Clean shutdown after SIGTERM/SIGINT, or every child finished for good."""
    INTERNAL = 1
    """A bug in the supervisor itself (an unexpected exception); logged, children stopped."""
    USAGE = 2
    """Bad command line or configuration; nothing was started (used by the owner's CLI)."""
    STARTUP_FAILED = 3
    """`setup()` failed, or a child exited or was not READY before the start-up deadline."""
    INTENSITY = 4
    """Restart intensity exceeded: too many restarts in the window; everything stopped."""
    LIFELINE = 75
    """Exit code of a CHILD whose supervisor died (its lifeline pipe reached EOF)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """
    Exponential delay before restarting a child that keeps failing.

    The n-th consecutive restart of a child waits `min(initial_s * factor**(n-1), max_s)`.
    A child that stayed up for `reset_after_s` seconds starts counting from 1 again.
    """

    initial_s: float = 0.1
    factor: float = 2.0
    max_s: float = 5.0
    reset_after_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.initial_s >= 0:
            raise ValueError(f"backoff initial_s must be >= 0, got {self.initial_s}")
        if not self.factor >= 1:
            raise ValueError(f"backoff factor must be >= 1, got {self.factor}")
        if not self.max_s >= self.initial_s:
            raise ValueError(f"backoff max_s must be >= initial_s, got {self.max_s}")
        if not self.reset_after_s > 0:
            raise ValueError(f"backoff reset_after_s must be > 0, got {self.reset_after_s}")

    def delay_s(self, consecutive: int) -> float:
        """
        Delay before the `consecutive`-th restart in a row (1-based).
        """
        if consecutive <= 0:
            return 0.0
        # NB: cap the exponent so a long-failing child cannot overflow the float.
        return float(min(self.initial_s * self.factor ** min(consecutive - 1, 64), self.max_s))


@dataclass(frozen=True, slots=True)
class Intensity:
    """At most `max_restarts` restarts (all children together) within `window_s` seconds."""

    max_restarts: int = 5
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"intensity max_restarts must be >= 0, got {self.max_restarts}")
        if not self.window_s > 0:
            raise ValueError(f"intensity window_s must be > 0, got {self.window_s}")


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """
    One supervised OS process.

    Args:
        name: unique within the supervisor; `[A-Za-z0-9_.:-]{1,64}`; used in logs and
            as the key of its READY info.
        target: called in the child after fork as `target(*args)`. Returning ends the
            child with code 0; `SystemExit(n)` with code n; an exception with code 1.
        args: positional arguments (not pickled: the start method is fork).
        restart: when the child is started again after it exits.
        shutdown_timeout_s: after SIGTERM, how long to wait before SIGKILL.
        reports_ready: the child calls `supervisor.child.notify_ready(...)` once it
            serves; if False it counts as ready as soon as it is started.
        lifeline: how the child watches for its supervisor's death.
        max_rss_bytes: resident-size limit reported as unhealthy by `status()`
            (0 = no limit).
        ready_before_next: the children after this one in its group start (and
            restart) only once this one reported READY; needs `reports_ready`.
        stdout_to_stderr: the child's fd 1 is redirected to fd 2, so that the
            supervisor's stdout carries only its ready line (a machine-read contract).
    """

    name: str
    target: Callable[..., object]
    args: tuple[object, ...] = ()
    restart: Restart = Restart.PERMANENT
    shutdown_timeout_s: float = 5.0
    reports_ready: bool = False
    lifeline: Lifeline = Lifeline.THREAD
    max_rss_bytes: int = 0
    ready_before_next: bool = False
    stdout_to_stderr: bool = True

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"child name must match {_NAME.pattern}, got {self.name!r}")
        if not callable(self.target):
            raise ValueError(f"child {self.name}: target must be callable")
        if not self.shutdown_timeout_s > 0:
            raise ValueError(
                f"child {self.name}: shutdown_timeout_s must be > 0, got {self.shutdown_timeout_s}"
            )
        if self.ready_before_next and not self.reports_ready:
            raise ValueError(f"child {self.name}: ready_before_next needs reports_ready")
        if self.max_rss_bytes < 0:
            raise ValueError(
                f"child {self.name}: max_rss_bytes must be >= 0, got {self.max_rss_bytes}"
            )


@dataclass(frozen=True, slots=True)
class Group:
    """An ordered list of children sharing one restart strategy."""

    name: str
    strategy: Strategy
    children: tuple[ChildSpec, ...]

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"group name must match {_NAME.pattern}, got {self.name!r}")


@dataclass(frozen=True, slots=True)
class Tree:
    """
    Everything a supervisor runs: groups in start order plus the global policies.

    Args:
        groups: started in order (children in order), stopped in reverse.
        intensity: restart intensity over all children.
        backoff: restart delay policy.
        ready_timeout_s: start-up deadline for every `reports_ready` child to report.
    """

    groups: tuple[Group, ...]
    intensity: Intensity = field(default_factory=Intensity)
    backoff: Backoff = field(default_factory=Backoff)
    ready_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        names = [c.name for g in self.groups for c in g.children]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate child names: {', '.join(duplicates)}")
        group_names = [g.name for g in self.groups]
        if len(set(group_names)) != len(group_names):
            raise ValueError(f"duplicate group names: {group_names}")
        if not names:
            raise ValueError("a supervision tree needs at least one child")
        if not self.ready_timeout_s > 0:
            raise ValueError(f"ready_timeout_s must be > 0, got {self.ready_timeout_s}")

    def children(self) -> tuple[ChildSpec, ...]:
        """All children in start order."""
        return tuple(c for g in self.groups for c in g.children)
