"""
Generic OS-process supervision: child specs, restart strategies and intensity, ordered
shutdown, a lifeline against orphans, READY reporting and health via psutil.

Knows nothing about Raft or keys and imports nothing from `concord`.

    spec.py        ChildSpec, Group, Tree, Restart, Strategy, Lifeline, Backoff, Intensity,
                   ExitCode (pure data)
    supervisor.py  Supervisor: start / poll / stop / status, or run() for a main program
    child.py       runs in children: bootstrap after fork, notify_ready(), lifeline_fd(),
                   previous_info(), restart_count(), exit_orphaned(), leave_tree()
    treelock.py    the tree lock: the last child of a SIGKILLed supervisor runs cleanup()
    readiness.py   the READY frame (versioned) and the one-line ready banner
"""

from __future__ import annotations

#: Concord's mark: concord.supervisor_clash tells this package from PyPI's supervisord
#: (which installs a top-level package of the same name).
CONCORD_SUPERVISOR = True

from supervisor.child import (
    exit_orphaned,
    leave_tree,
    lifeline_fd,
    notify_ready,
    previous_info,
    restart_count,
    supervisor_alive,
)
from supervisor.readiness import format_ready_line, parse_ready_line
from supervisor.spec import (
    Backoff,
    ChildSpec,
    ExitCode,
    Group,
    Intensity,
    Lifeline,
    Restart,
    Strategy,
    Tree,
)
from supervisor.supervisor import ChildState, Health, StartupError, Status, Supervisor

__all__ = [
    "CONCORD_SUPERVISOR",
    "Backoff",
    "ChildSpec",
    "ChildState",
    "ExitCode",
    "Group",
    "Health",
    "Intensity",
    "Lifeline",
    "Restart",
    "StartupError",
    "Status",
    "Strategy",
    "Supervisor",
    "Tree",
    "exit_orphaned",
    "format_ready_line",
    "leave_tree",
    "lifeline_fd",
    "notify_ready",
    "parse_ready_line",
    "previous_info",
    "restart_count",
    "supervisor_alive",
]
