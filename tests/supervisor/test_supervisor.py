"""
The supervisor with real processes: restarts, intensity, signals, lifeline, readiness.

In-process tests drive `Supervisor.start()/poll()/stop()` from the test; the signal and
exit-code tests run `python -m tests.supervisor.app` as a real supervisor process. Every
child records its pid in the test's marker directory, and every test ends by killing
whatever it started that is still alive (by pid) and asserting that nothing was left.
"""

from __future__ import annotations

import io
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest

from supervisor.readiness import format_ready_line, parse_ready_line
from supervisor.spec import (
    Backoff,
    ChildSpec,
    ExitCode,
    Group,
    Intensity,
    Restart,
    Strategy,
    Tree,
)
from supervisor.supervisor import ChildState, Health, StartupError, Status, Supervisor
from tests.helpers import wait_until
from tests.supervisor import app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FAST = Backoff(initial_s=0.01, max_s=0.05)


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie waiting for its reaper)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def kill_leftovers(marker_dir: Path) -> list[int]:
    """SIGKILL every recorded pid still running; return the ones that were."""
    alive = [pid for pid in app.recorded_pids(marker_dir) if not gone(pid)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # exited in between
    return alive


@pytest.fixture
def marker_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory where children record their pids; checked and cleaned at teardown."""
    yield tmp_path
    assert [] == kill_leftovers(tmp_path)


@pytest.fixture
def make_supervisor(marker_dir: Path) -> Iterator[Callable[..., Supervisor]]:
    """Build in-process supervisors that are always stopped at teardown."""
    made: list[Supervisor] = []

    def make(groups: tuple[Group, ...], **kwargs: object) -> Supervisor:
        tree = Tree(
            groups,
            intensity=Intensity(max_restarts=10, window_s=60),
            backoff=FAST,
            ready_timeout_s=float(kwargs.pop("ready_timeout_s", 20.0)),  # type: ignore[arg-type]
        )
        sup = Supervisor(tree, out=io.StringIO(), **kwargs)  # type: ignore[arg-type]
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.stop()


def serving(name: str, marker_dir: Path, **kwargs: object) -> ChildSpec:
    """A child that reports READY with its pid and serves until stopped."""
    return ChildSpec(
        name, app.serve_forever, (marker_dir,), reports_ready=True, shutdown_timeout_s=2, **kwargs  # type: ignore[arg-type]
    )


def pids(status: Status) -> dict[str, int | None]:
    """child name -> pid."""
    return {c.name: c.pid for c in status.children}


def drive_until(sup: Supervisor, predicate: Callable[[Status], bool], timeout_s: float = 10) -> Status:
    """Run the supervisor loop until `predicate(status)` holds; fail if it wants to exit."""

    def step() -> Status | None:
        code = sup.poll(0.02)
        assert code is None, f"supervisor wanted to exit with {code}"
        status = sup.status()
        return status if predicate(status) else None

    status = wait_until(step, timeout_s, describe=lambda: repr(sup.status()))
    assert status is not None
    return status


def restarted(name: str, old_pid: int | None) -> Callable[[Status], bool]:
    """The child runs again under a new pid and has reported READY."""

    def check(status: Status) -> bool:
        child = status.child(name)
        return child.ready and child.pid is not None and child.pid != old_pid

    return check


def test_only_the_child_restarts_when_strategy_is_one_for_one(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """one_for_one: a killed read worker restarts alone; its sibling keeps its pid."""
    sup = make_supervisor(
        (Group("readers", Strategy.ONE_FOR_ONE, (serving("r1", marker_dir), serving("r2", marker_dir))),)
    )
    sup.start()
    before = pids(sup.status())
    os.kill(before["r1"] or 0, signal.SIGKILL)
    after = drive_until(sup, restarted("r1", before["r1"]))
    assert before["r2"] == after.child("r2").pid
    assert 1 == after.child("r1").restarts
    assert 0 == after.child("r2").restarts
    assert -signal.SIGKILL == after.child("r1").last_exit_code
    assert gone(before["r1"] or 0)


def test_ps_shows_the_child_name_when_a_child_runs(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """/proc/<pid>/comm (what ps, top and psutil show) is the child's name, not python3."""
    sup = make_supervisor((Group("readers", Strategy.ONE_FOR_ONE, (serving("r1", marker_dir),)),))
    sup.start()
    pid = pids(sup.status())["r1"]
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "r1"


def test_later_siblings_restart_in_order_when_strategy_is_rest_for_one(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """rest_for_one: killing b restarts b then c; a, started before b, keeps its pid."""
    sup = make_supervisor(
        (
            Group(
                "core",
                Strategy.REST_FOR_ONE,
                (serving("a", marker_dir), serving("b", marker_dir), serving("c", marker_dir)),
            ),
        )
    )
    sup.start()
    before = pids(sup.status())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="supervisor.supervisor"):
        os.kill(before["b"] or 0, signal.SIGKILL)
        after = drive_until(
            sup, lambda s: restarted("b", before["b"])(s) and restarted("c", before["c"])(s)
        )
    assert before["a"] == after.child("a").pid
    assert [0, 1, 1] == [after.child(n).restarts for n in ("a", "b", "c")]
    assert gone(before["c"] or 0)
    events = [
        m.split(" pid=")[0]
        for m in caplog.messages
        if m.startswith(("stopping sibling", "child started"))
    ]
    assert ["stopping sibling for restart name=c because=b strategy=rest_for_one",
            "child started name=b", "child started name=c"] == events


def test_whole_group_restarts_when_strategy_is_one_for_all(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """one_for_all: killing the last child restarts every child of its group, not others."""
    sup = make_supervisor(
        (
            Group("core", Strategy.ONE_FOR_ALL, (serving("a", marker_dir), serving("b", marker_dir))),
            Group("readers", Strategy.ONE_FOR_ONE, (serving("r", marker_dir),)),
        )
    )
    sup.start()
    before = pids(sup.status())
    os.kill(before["b"] or 0, signal.SIGKILL)
    after = drive_until(
        sup, lambda s: restarted("a", before["a"])(s) and restarted("b", before["b"])(s)
    )
    assert before["r"] == after.child("r").pid


def test_child_is_not_restarted_when_transient_and_exit_is_normal(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """A transient child that exits 0 is done; the supervisor keeps the others running."""
    sup = make_supervisor(
        (
            Group(
                "g",
                Strategy.REST_FOR_ONE,
                (
                    ChildSpec(
                        "job",
                        app.finish_after_ready,
                        (marker_dir, 0),
                        restart=Restart.TRANSIENT,
                        reports_ready=True,
                    ),
                    serving("s", marker_dir),
                ),
            ),
        )
    )
    sup.start()
    status = drive_until(sup, lambda s: s.child("job").state is ChildState.DONE)
    assert 0 == status.child("job").last_exit_code
    assert 0 == status.child("s").restarts
    assert ChildState.RUNNING == status.child("s").state


def test_child_is_restarted_when_transient_and_exit_is_abnormal(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """A transient child that exits non-zero is restarted."""
    sup = make_supervisor(
        (
            Group(
                "g",
                Strategy.ONE_FOR_ONE,
                (
                    ChildSpec(
                        "job",
                        app.finish_after_ready,
                        (marker_dir, 5),
                        restart=Restart.TRANSIENT,
                    ),
                ),
            ),
        )
    )
    sup.start()
    status = drive_until(sup, lambda s: s.child("job").restarts >= 2)
    assert 5 == status.child("job").last_exit_code


def test_supervisor_exits_ok_when_every_temporary_child_finished(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """Temporary children are never restarted, even after a failure; then poll says OK."""
    sup = make_supervisor(
        (
            Group(
                "g",
                Strategy.ONE_FOR_ONE,
                (ChildSpec("once", app.finish_after_ready, (marker_dir, 7), restart=Restart.TEMPORARY),),
            ),
        )
    )
    sup.start()
    codes: list[int | None] = []

    def exited() -> bool:
        codes.append(sup.poll(0.05))
        return codes[-1] is not None

    wait_until(exited, 10, describe=lambda: repr(sup.status()))
    assert ExitCode.OK == codes[-1]
    assert 0 == sup.status().child("once").restarts


def test_ready_line_is_printed_once_when_every_child_reported(
    marker_dir: Path,
) -> None:
    """One line names every child's READY info; a later restart prints nothing more."""
    out = io.StringIO()
    tree = Tree(
        (Group("g", Strategy.ONE_FOR_ONE, (serving("a", marker_dir), serving("b", marker_dir))),),
        backoff=FAST,
    )
    sup = Supervisor(tree, out=out, ready_line=app.pid_line)
    try:
        sup.start()
        before = pids(sup.status())
        expected = format_ready_line("test", "n1", {"a": before["a"] or 0, "b": before["b"] or 0})
        assert expected + "\n" == out.getvalue()
        assert ("test", {"node": "n1", "a": str(before["a"]), "b": str(before["b"])}) == (
            parse_ready_line(out.getvalue())
        )
        os.kill(before["a"] or 0, signal.SIGKILL)
        after = drive_until(sup, restarted("a", before["a"]))
        assert {"pid": after.child("a").pid} == after.child("a").info
        assert expected + "\n" == out.getvalue()
    finally:
        sup.stop()


def test_startup_fails_naming_the_child_when_it_is_not_ready_by_the_deadline(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """A child that never reports READY fails start-up with a clear message; all stopped."""
    cleaned: list[bool] = []
    sup = make_supervisor(
        (
            Group(
                "g",
                Strategy.ONE_FOR_ONE,
                (
                    serving("fine", marker_dir),
                    ChildSpec("mute", app.never_ready, (marker_dir,), reports_ready=True),
                ),
            ),
        ),
        ready_timeout_s=1.5,
        cleanup=lambda: cleaned.append(True),
    )
    with pytest.raises(StartupError) as info:
        sup.start()
    assert "child mute not ready within 1.5s" == info.value.message
    assert ExitCode.STARTUP_FAILED == info.value.code
    assert [True] == cleaned
    assert all(gone(pid) for pid in app.recorded_pids(marker_dir))


def test_startup_fails_with_the_exit_code_when_a_child_exits_before_ready(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """A child dying during start-up (e.g. a bad config) is reported, not restarted."""
    sup = make_supervisor(
        (
            Group(
                "g",
                Strategy.ONE_FOR_ONE,
                (ChildSpec("broken", app.exit_before_ready, (marker_dir, 3), reports_ready=True),),
            ),
        )
    )
    with pytest.raises(StartupError) as info:
        sup.start()
    assert "child broken exited with code 3 before it was ready" == info.value.message
    assert 0 == sup.status().child("broken").restarts


def test_cleanup_runs_and_no_child_starts_when_setup_fails(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """setup() raising fails start-up; cleanup() still runs; nothing was forked."""
    calls: list[str] = []

    def setup() -> None:
        calls.append("setup")
        raise OSError("no space left for segment")

    sup = make_supervisor(
        (Group("g", Strategy.ONE_FOR_ONE, (serving("a", marker_dir),)),),
        setup=setup,
        cleanup=lambda: calls.append("cleanup"),
    )
    with pytest.raises(StartupError) as info:
        sup.start()
    assert "setup failed: OSError: no space left for segment" == info.value.message
    assert ["setup", "cleanup"] == calls
    assert [] == app.recorded_pids(marker_dir)


def test_child_is_killed_when_it_ignores_sigterm_past_its_shutdown_timeout(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """stop(): SIGTERM, wait shutdown_timeout_s, then SIGKILL."""
    sup = make_supervisor(
        (
            Group(
                "g",
                Strategy.ONE_FOR_ONE,
                (
                    ChildSpec(
                        "stubborn",
                        app.ignore_sigterm,
                        (marker_dir,),
                        reports_ready=True,
                        shutdown_timeout_s=0.2,
                    ),
                ),
            ),
        )
    )
    sup.start()
    pid = sup.status().child("stubborn").pid or 0
    sup.stop()
    assert gone(pid)
    assert -signal.SIGKILL == sup.status().child("stubborn").last_exit_code


def test_status_reports_unhealthy_when_child_is_stopped_or_over_rss(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """psutil health: SIGSTOP shows as stopped; an RSS limit below the real RSS shows."""
    sup = make_supervisor(
        (
            Group(
                "g",
                Strategy.ONE_FOR_ONE,
                (serving("paused", marker_dir), serving("fat", marker_dir, max_rss_bytes=1024)),
            ),
        )
    )
    sup.start()
    status = sup.status()
    assert Health.OK == status.child("paused").health
    assert Health.RSS_OVER_LIMIT == status.child("fat").health
    assert (status.child("fat").rss_bytes or 0) > 1024
    os.kill(status.child("paused").pid or 0, signal.SIGSTOP)
    wait_until(lambda: Health.STOPPED == sup.status().child("paused").health, 5)
    sup.stop()
    assert Health.NOT_RUNNING == sup.status().child("paused").health


def test_child_is_restarted_when_it_sends_a_bad_ready_frame(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """A READY pipe carrying garbage is a protocol error: that child is stopped and restarted."""
    sup = make_supervisor(
        (
            Group(
                "g",
                Strategy.ONE_FOR_ONE,
                (serving("ok", marker_dir), ChildSpec("liar", app.send_garbage, (marker_dir,))),
            ),
        )
    )
    sup.start()
    drive_until(sup, lambda s: s.child("liar").restarts >= 1)


def test_restarted_child_is_restarted_again_when_not_ready_within_the_deadline(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """After start-up, a restarted child has ready_timeout_s to report READY, or is stopped."""
    sup = make_supervisor(
        (
            Group(
                "g",
                Strategy.ONE_FOR_ONE,
                (ChildSpec("flaky", app.ready_only_once, (marker_dir,), reports_ready=True),),
            ),
        ),
        ready_timeout_s=1.5,
    )
    sup.start()
    os.kill(sup.status().child("flaky").pid or 0, signal.SIGKILL)
    status = drive_until(sup, lambda s: s.child("flaky").restarts >= 2)
    assert -signal.SIGTERM == status.child("flaky").last_exit_code


def test_later_sibling_waits_for_ready_when_earlier_child_is_ready_before_next(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """ready_before_next: after a rest_for_one restart, b starts only once a is READY again."""
    os.mkfifo(marker_dir / "go")
    sup = make_supervisor(
        (
            Group(
                "core",
                Strategy.REST_FOR_ONE,
                (
                    ChildSpec(
                        "a",
                        app.gate_keeper,
                        (marker_dir,),
                        reports_ready=True,
                        ready_before_next=True,
                    ),
                    serving("b", marker_dir),
                ),
            ),
        )
    )
    sup.start()
    before = pids(sup.status())
    os.kill(before["a"] or 0, signal.SIGKILL)
    drive_until(sup, lambda s: s.child("a").state is ChildState.RUNNING and s.child("a").pid != before["a"])
    for _ in range(3):
        # b's backoff (10 ms) has long passed: only the gate holds it back.
        assert sup.poll(0.05) is None
    status = sup.status()
    assert (False, ChildState.BACKOFF) == (status.child("a").ready, status.child("b").state)
    fd = os.open(marker_dir / "go", os.O_WRONLY)
    os.close(fd)
    after = drive_until(sup, restarted("b", before["b"]))
    assert after.child("a").ready


def test_later_sibling_never_starts_when_a_gating_child_is_not_ready_at_startup(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The start-up error names the late gating child; the sibling behind it never ran."""
    sup = make_supervisor(
        (
            Group(
                "core",
                Strategy.REST_FOR_ONE,
                (
                    ChildSpec(
                        "gate",
                        app.never_ready,
                        (marker_dir,),
                        reports_ready=True,
                        ready_before_next=True,
                    ),
                    serving("behind", marker_dir),
                ),
            ),
        ),
        ready_timeout_s=0.5,
    )
    with caplog.at_level(logging.INFO, logger="supervisor.supervisor"):
        with pytest.raises(StartupError) as info:
            sup.start()
    assert "child gate not ready within 0.5s" == info.value.message
    started = [m.split(" pid=")[0] for m in caplog.messages if m.startswith("child started")]
    assert ["child started name=gate"] == started


def test_restarted_child_gets_its_previous_ready_info_when_restarted(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """previous_info(): a port first chosen by the OS (0) is bound again after a restart."""
    sup = make_supervisor(
        (
            Group(
                "g",
                Strategy.ONE_FOR_ONE,
                (ChildSpec("srv", app.bind_same_port, (marker_dir,), reports_ready=True),),
            ),
        )
    )
    sup.start()
    first = sup.status().child("srv")
    assert 0 == first.info["restarts"]
    os.kill(first.pid or 0, signal.SIGKILL)
    again = drive_until(sup, restarted("srv", first.pid)).child("srv")
    assert (first.info["port"], 1) == (again.info["port"], again.info["restarts"])


def test_start_refuses_to_fork_when_the_supervisor_has_threads(
    make_supervisor: Callable[..., Supervisor], marker_dir: Path
) -> None:
    """Forking with other threads is unsafe: start() fails before any child exists."""
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        sup = make_supervisor((Group("g", Strategy.ONE_FOR_ONE, (serving("a", marker_dir),)),))
        with pytest.raises(RuntimeError, match="refusing to fork child a"):
            sup.start()
    finally:
        release.set()
        thread.join()
    assert [] == app.recorded_pids(marker_dir)


# ----------------------------------------------------------------- as a real process


class Running:
    """A `python -m tests.supervisor.app` supervisor process."""

    def __init__(self, scenario: str, marker_dir: Path) -> None:
        self.marker_dir = marker_dir
        self.stderr_path = marker_dir / "stderr.txt"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.supervisor.app", scenario, str(marker_dir)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )

    def ready_fields(self, timeout_s: float = 20) -> dict[str, str]:
        """Wait for the ready line and parse it."""
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout_s), f"no ready line; stderr: {self.stderr()}"
        line = self.process.stdout.readline()
        product, fields = parse_ready_line(line)
        assert "test" == product
        return fields

    def wait(self, timeout_s: float = 20) -> int:
        """Wait for the supervisor to exit; its exit code."""
        return self.process.wait(timeout_s)

    def stderr(self) -> str:
        """Everything the supervisor logged."""
        return self.stderr_path.read_text()

    def close(self) -> None:
        """Kill the supervisor if still running, and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def running(marker_dir: Path) -> Iterator[Callable[[str], Running]]:
    """Start supervisor processes; kill and reap them at teardown."""
    started: list[Running] = []

    def start(scenario: str) -> Running:
        run = Running(scenario, marker_dir)
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


def all_gone(marker_dir: Path) -> bool:
    """Every process a child ever recorded has exited."""
    return all(gone(pid) for pid in app.recorded_pids(marker_dir))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_every_process_is_gone_and_cleanup_ran_when_supervisor_gets_stop_signal(
    running: Callable[[str], Running], marker_dir: Path, signum: int
) -> None:
    """SIGTERM/SIGINT: ordered shutdown in reverse start order, cleanup(), exit 0."""
    sup = running("pair")
    fields = sup.ready_fields()
    child_pids = [int(fields[name]) for name in ("a", "b", "r")]
    sup.process.send_signal(signum)
    assert ExitCode.OK == sup.wait()
    assert sup.process.stdout is not None
    assert "" == sup.process.stdout.read()  # children's stdout went to stderr
    assert f"stdout noise from child {fields['a']}" in sup.stderr()
    assert all(gone(pid) for pid in child_pids)
    assert all_gone(marker_dir)
    assert "done" == (marker_dir / "cleanup").read_text()
    log = sup.stderr()
    order = [log.index(f"stopping child name={name}") for name in ("r", "b", "a")]
    assert sorted(order) == order


def test_children_exit_by_themselves_when_supervisor_is_sigkilled(
    running: Callable[[str], Running], marker_dir: Path
) -> None:
    """The lifeline (thread mode for a and r, poll mode for b) leaves no orphans, and the
    last child alive runs cleanup() once (the tree lock)."""
    sup = running("pair")
    fields = sup.ready_fields()
    child_pids = [int(fields[name]) for name in ("a", "b", "r")]
    sup.process.kill()
    sup.wait()
    wait_until(lambda: all(gone(pid) for pid in child_pids), 10, describe=lambda: str(child_pids))
    assert all_gone(marker_dir)
    runs = [int(line) for line in (marker_dir / "cleanup-pids").read_text().split()]
    assert 1 == len(runs) and runs[0] in child_pids, runs


def test_supervisor_stops_everything_and_exits_nonzero_when_restart_intensity_is_exceeded(
    running: Callable[[str], Running], marker_dir: Path
) -> None:
    """More than max_restarts=3 restarts in the window: clean stop, log line, exit 4."""
    sup = running("crashing")
    assert ExitCode.INTENSITY == sup.wait()
    log = sup.stderr()
    assert "restart intensity exceeded restarts=4 max_restarts=3 window_s=60" in log
    assert "last_child=crasher; shutting down" in log
    assert all_gone(marker_dir)
    assert "done" == (marker_dir / "cleanup").read_text()


def test_supervisor_exits_with_startup_failed_when_a_child_is_never_ready(
    running: Callable[[str], Running], marker_dir: Path
) -> None:
    """The process exits 3 with one clear error line; all children are gone."""
    sup = running("never-ready")
    assert ExitCode.STARTUP_FAILED == sup.wait()
    assert "ERROR start-up failed: child mute not ready within 1.5s" in sup.stderr()
    assert all_gone(marker_dir)
    assert "done" == (marker_dir / "cleanup").read_text()


def test_child_exit_is_seen_when_a_grandchild_holds_its_exit_sentinel(
    running: Callable[[str], Running], marker_dir: Path
) -> None:
    """SIGCHLD backs up the exit sentinel that a forked grandchild keeps open."""
    sup = running("grandchild")
    sup.ready_fields()
    wait_until(
        lambda: sup.stderr().count("child started name=forker") == 2,
        10,
        describe=sup.stderr,
    )
    assert "child exited name=forker code=5" in sup.stderr()
    sup.process.send_signal(signal.SIGTERM)
    assert ExitCode.OK == sup.wait()
    wait_until(lambda: all_gone(marker_dir), 10, describe=lambda: str(app.recorded_pids(marker_dir)))


def test_status_is_logged_when_supervisor_gets_sigusr1(
    running: Callable[[str], Running], marker_dir: Path
) -> None:
    """SIGUSR1: one status line per child (state, pid, health), and supervision goes on."""
    sup = running("pair")
    fields = sup.ready_fields()
    sup.process.send_signal(signal.SIGUSR1)
    expected = [
        f"status name={name} state=running pid={fields[name]} ready=True restarts=0 health=ok"
        for name in ("a", "b", "r")
    ]
    wait_until(lambda: all(line in sup.stderr() for line in expected), 10, describe=sup.stderr)
    sup.process.send_signal(signal.SIGTERM)
    assert ExitCode.OK == sup.wait()
