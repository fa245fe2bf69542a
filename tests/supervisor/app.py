"""
Child targets and a runnable supervisor used by the supervisor tests.

`python -m tests.supervisor.app SCENARIO MARKER_DIR` runs a real supervisor in its own
process (its own signal handlers, its own exit code), the way `concord.supervisor` does.
Children report their pid in their READY info, and the ready line names every child's pid,
so a test learns them. Every child also records its pid as MARKER_DIR/pid-<pid> before
anything else, so a test can check that every process ever started is gone, and
`cleanup()` writes MARKER_DIR/cleanup and appends its pid to MARKER_DIR/cleanup-pids.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
from pathlib import Path

from supervisor.child import lifeline_fd, notify_ready, previous_info, restart_count
from supervisor.readiness import format_ready_line
from supervisor.spec import Backoff, ChildSpec, ExitCode, Group, Intensity, Lifeline, Strategy, Tree
from supervisor.supervisor import ReadyInfos, Supervisor


def record_pid(marker_dir: Path) -> None:
    """Leave MARKER_DIR/pid-<pid> behind, for the test's end-of-test process check."""
    (marker_dir / f"pid-{os.getpid()}").write_text("")


def recorded_pids(marker_dir: Path) -> list[int]:
    """Every pid a child of this marker directory recorded."""
    return sorted(int(p.name[4:]) for p in marker_dir.glob("pid-*"))


def serve_forever(marker_dir: Path) -> None:
    """Report READY with the pid, then wait for signals until SIGTERM kills the process."""
    record_pid(marker_dir)
    print(f"stdout noise from child {os.getpid()}", flush=True)
    notify_ready({"pid": os.getpid()})
    while True:
        signal.pause()


def serve_polling_lifeline(marker_dir: Path) -> None:
    """Report READY, then poll the lifeline fd (Lifeline.POLL) and exit when it fires."""
    record_pid(marker_dir)
    notify_ready({"pid": os.getpid()})
    while True:
        readable, _, _ = select.select([lifeline_fd()], [], [])
        if readable:
            sys.exit(ExitCode.LIFELINE)


def crash_after_ready(marker_dir: Path) -> None:
    """Report READY, then fail."""
    record_pid(marker_dir)
    notify_ready({"pid": os.getpid()})
    raise SystemExit(9)


def never_ready(marker_dir: Path) -> None:
    """Run without ever reporting READY."""
    record_pid(marker_dir)
    while True:
        signal.pause()


def exit_before_ready(marker_dir: Path, code: int) -> None:
    """Exit with `code` without reporting READY."""
    record_pid(marker_dir)
    raise SystemExit(code)


def finish_after_ready(marker_dir: Path, code: int) -> None:
    """Report READY, then exit with `code` (0 is a normal exit)."""
    record_pid(marker_dir)
    notify_ready({"pid": os.getpid()})
    raise SystemExit(code)


def ignore_sigterm(marker_dir: Path) -> None:
    """Ignore SIGTERM (a child that will not drain): only SIGKILL stops it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve_forever(marker_dir)


def send_garbage(marker_dir: Path) -> None:
    """Write bytes that are not a READY frame to the READY pipe, then wait."""
    record_pid(marker_dir)
    from supervisor.child import context

    ctx = context()
    assert ctx is not None
    os.write(ctx.ready_fd, b"\xff\x00\x00\x00\x00\x00")
    while True:
        signal.pause()


def ready_only_once(marker_dir: Path) -> None:
    """Report READY on the first run only; later runs never do."""
    record_pid(marker_dir)
    flag = marker_dir / "was-ready"
    if not flag.exists():
        flag.write_text("")
        notify_ready({"pid": os.getpid()})
    while True:
        signal.pause()


def gate_keeper(marker_dir: Path) -> None:
    """
    First run: READY at once. Later runs: READY only after the test writes to the `go` FIFO.
    """
    record_pid(marker_dir)
    first = marker_dir / "gate-first-run"
    if first.exists():
        with open(marker_dir / "go", "rb") as fifo:
            fifo.read()
    first.write_text("")
    notify_ready({"pid": os.getpid()})
    while True:
        signal.pause()


def fork_then_exit(marker_dir: Path) -> None:
    """
    First run: fork a grandchild (which inherits this child's exit sentinel and lives until
    the lifeline fires), then exit 5. Later runs: serve until stopped.
    """
    record_pid(marker_dir)
    flag = marker_dir / "forked"
    if flag.exists():
        while True:
            signal.pause()
    flag.write_text("")
    if os.fork() == 0:
        record_pid(marker_dir)
        select.select([lifeline_fd()], [], [])
        os._exit(0)
    raise SystemExit(5)


def bind_same_port(marker_dir: Path) -> None:
    """Listen on the port the previous incarnation reported (0 = any, the first time)."""
    record_pid(marker_dir)
    previous = previous_info().get("port", 0)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(previous)))
    listener.listen()
    notify_ready({"pid": os.getpid(), "port": listener.getsockname()[1], "restarts": restart_count()})
    while True:
        signal.pause()


def pid_line(infos: ReadyInfos) -> str:
    """The ready line: one `<child>=<pid>` field per child that reported one."""
    return format_ready_line(
        "test", "n1", {name: info["pid"] for name, info in infos.items() if "pid" in info}
    )


def build(scenario: str, marker_dir: Path) -> Supervisor:
    """The supervisor of a named scenario."""

    def cleanup() -> None:
        (marker_dir / "cleanup").write_text("done")
        with open(marker_dir / "cleanup-pids", "a") as runs:  # who ran it, once per line
            runs.write(f"{os.getpid()}\n")

    if scenario == "pair":
        groups: tuple[Group, ...] = (
            Group(
                "core",
                Strategy.REST_FOR_ONE,
                (
                    ChildSpec("a", serve_forever, (marker_dir,), reports_ready=True, shutdown_timeout_s=2),
                    ChildSpec(
                        "b",
                        serve_polling_lifeline,
                        (marker_dir,),
                        reports_ready=True,
                        lifeline=Lifeline.POLL,
                        shutdown_timeout_s=2,
                    ),
                ),
            ),
            Group(
                "readers",
                Strategy.ONE_FOR_ONE,
                (ChildSpec("r", serve_forever, (marker_dir,), reports_ready=True, shutdown_timeout_s=2),),
            ),
        )
        tree = Tree(groups, ready_timeout_s=20)
    elif scenario == "grandchild":
        tree = Tree(
            (Group("g", Strategy.ONE_FOR_ONE, (ChildSpec("forker", fork_then_exit, (marker_dir,)),)),),
            backoff=Backoff(initial_s=0.01, max_s=0.02),
        )
    elif scenario == "crashing":
        tree = Tree(
            (
                Group(
                    "core",
                    Strategy.ONE_FOR_ONE,
                    (
                        ChildSpec("steady", serve_forever, (marker_dir,), reports_ready=True),
                        ChildSpec("crasher", crash_after_ready, (marker_dir,), reports_ready=True),
                    ),
                ),
            ),
            intensity=Intensity(max_restarts=3, window_s=60),
            backoff=Backoff(initial_s=0.01, max_s=0.02),
            ready_timeout_s=20,
        )
    elif scenario == "never-ready":
        tree = Tree(
            (
                Group(
                    "core",
                    Strategy.ONE_FOR_ONE,
                    (
                        ChildSpec("fine", serve_forever, (marker_dir,), reports_ready=True),
                        ChildSpec("mute", never_ready, (marker_dir,), reports_ready=True),
                    ),
                ),
            ),
            ready_timeout_s=1.5,
        )
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    return Supervisor(tree, cleanup=cleanup, ready_line=pid_line)


def main() -> int:
    """Entry point: run the scenario named on the command line."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    scenario, marker_dir = sys.argv[1], Path(sys.argv[2])
    return build(scenario, marker_dir).run()


if __name__ == "__main__":
    sys.exit(main())
