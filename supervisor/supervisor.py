"""
The supervisor: starts a tree of OS processes, watches them, restarts them, stops them.

Single-threaded by design: one selector loop over the children's exit sentinels, their
READY pipes and a signal wake-up pipe; restart delays come from the loop's timeout. It
never starts a thread and must hold no zmq context, because it forks.

Start method: **fork**, chosen explicitly (`multiprocessing.get_context("fork")`), because
(1) the supervisor has no threads and no zmq context (checked before every fork: a
thread makes `fork` raise), so fork is safe here; (2) a restart costs a fork, not a fresh
interpreter importing the whole package again (spawn: ~100 ms+), which matters for
read-worker and raft-worker restart latency; (3) the lifeline and READY pipe descriptors
and the child's target need no pickling or fd passing. Children create their own
resources (zmq contexts, sockets, shared-memory attachments) after start.

Resource ownership: `setup()` runs before the first child starts; `cleanup()` runs after
every child has exited, whatever happened (normal end, crash, intensity exceeded,
SIGTERM/SIGINT, an exception in the supervisor). If the supervisor itself is SIGKILLed,
the children exit by themselves through the lifeline and the last of them runs
`cleanup()` (supervisor/treelock.py; Linux).

Must never import `concord`.
"""

from __future__ import annotations

import collections
import enum
import logging
import multiprocessing
import os
import selectors
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TextIO

import psutil  # type: ignore[import-untyped, unused-ignore]

from supervisor.child import bootstrap
from supervisor.treelock import open_tree_lock
from supervisor.readiness import FrameDecoder, InfoValue, ReadinessProtocolError
from supervisor.spec import ChildSpec, ExitCode, Group, Restart, Strategy, Tree

logger = logging.getLogger(__name__)

START_METHOD = "fork"

ReadyInfos = Mapping[str, Mapping[str, InfoValue]]
"""child name -> the info dict of its latest READY."""


class StartupError(Exception):
    """Start-up failed; `code` is the exit code the process should end with."""

    def __init__(self, message: str, code: ExitCode = ExitCode.STARTUP_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __reduce__(self) -> tuple[object, ...]:
        return (self.__class__, (self.message, self.code))


class ChildState(enum.Enum):
    """Life cycle of one child slot."""

    STOPPED = "stopped"  # not started yet, or stopped by the supervisor
    RUNNING = "running"
    BACKOFF = "backoff"  # exited; waiting for its restart time
    DONE = "done"  # exited and will not be restarted


class Health(enum.Enum):
    """A running child's health as psutil sees it."""

    OK = "ok"
    ZOMBIE = "zombie"  # exited, not yet reaped
    STOPPED = "stopped"  # SIGSTOP / traced
    RSS_OVER_LIMIT = "rss_over_limit"
    GONE = "gone"  # the pid no longer exists
    NOT_RUNNING = "not_running"  # no process in this slot


@dataclass(frozen=True, slots=True)
class ChildStatus:
    """One child in a `Status` snapshot."""

    name: str
    group: str
    state: ChildState
    pid: int | None
    ready: bool
    info: Mapping[str, InfoValue]
    restarts: int
    last_exit_code: int | None
    health: Health
    rss_bytes: int | None


@dataclass(frozen=True, slots=True)
class Status:
    """A point-in-time snapshot of the supervisor and its children."""

    pid: int
    children: tuple[ChildStatus, ...]
    restarts_in_window: int
    all_ready: bool
    stopping: bool

    def child(self, name: str) -> ChildStatus:
        """The status of the child called `name`."""
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)


class _Slot:
    """Mutable bookkeeping for one child; owned by the supervisor loop."""

    def __init__(self, spec: ChildSpec, group: Group, position: int) -> None:
        self.spec = spec
        self.group = group
        self.position = position
        self.process: BaseProcess | None = None
        self.ready_fd: int | None = None
        self.decoder = FrameDecoder()
        self.state = ChildState.STOPPED
        self.ready = False
        self.ever_ready = False
        self.info: Mapping[str, InfoValue] = {}
        self.started_at = 0.0
        self.consecutive = 0
        self.restarts = 0
        self.restart_at: float | None = None
        self.ready_deadline: float | None = None
        self.last_exit_code: int | None = None


def default_ready_line(infos: ReadyInfos) -> str:
    """The ready line when the owner gives none: `supervisor ready pid=<pid> children=<n>`."""
    return f"supervisor ready pid={os.getpid()} children={len(infos)}"


class Supervisor:
    """
    Runs a `Tree` of children.

    Use `run()` from a program's main (installs SIGTERM/SIGINT/SIGUSR1 handlers, returns
    the exit code), or drive it step by step: `start()`, `poll(timeout_s)` until it
    returns an exit code, then `stop()` (always, e.g. in `finally`).

    Args:
        tree: the children and policies.
        setup: called once before any child starts (e.g. create shared memory).
        cleanup: called once after every child exited, whatever happened; also after a
            failed `setup()`, so it must cope with partial set-up. If the supervisor is
            SIGKILLed, the last child alive calls it (its forked copy) before it exits.
        ready_line: builds the one line printed to `out` when every child is READY, from
            each child's READY info (child name -> info); see `format_ready_line`.
        out: where the ready line goes (default: sys.stdout, flushed).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        tree: Tree,
        *,
        setup: Callable[[], None] | None = None,
        cleanup: Callable[[], None] | None = None,
        ready_line: Callable[[ReadyInfos], str] = default_ready_line,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tree = tree
        self._setup = setup
        self._cleanup = cleanup
        self._ready_line = ready_line
        self._out = out
        self._clock = clock
        self._context = multiprocessing.get_context("fork")
        self._slots = [
            _Slot(spec, group, position)
            for group in tree.groups
            for position, spec in enumerate(group.children)
        ]
        self._restart_times: collections.deque[float] = collections.deque()
        self._selector: selectors.BaseSelector | None = None
        self._lifeline: tuple[int, int] | None = None
        self._wakeup: tuple[int, int] | None = None
        self._tree_lock: int | None = None
        self._signal: int | None = None
        self._status_requested = False
        self._child_signal = False
        self._started = False
        self._starting = False
        self._stopping = False
        self._stopped = False
        self._failure: tuple[ExitCode, str] | None = None
        self._handlers_installed = False

    # ----------------------------------------------------------------------- public

    def run(self) -> int:
        """
        Start, supervise until told to stop or a policy says so, stop; never raises.

        Call it from the main thread (it installs signal handlers).

        Returns:
            An `ExitCode`: OK after SIGTERM/SIGINT or when every child finished for good;
            STARTUP_FAILED, INTENSITY, or INTERNAL (a bug, logged with its traceback).
        """
        previous = self._install_signal_handlers()
        code: int = ExitCode.INTERNAL
        try:
            try:
                self.start()
            except StartupError as exc:
                if exc.code is not ExitCode.OK:
                    logger.error("start-up failed: %s", exc.message)
                return int(exc.code)
            while True:
                result = self.poll(None)
                if result is not None:
                    code = result
                    if self._failure is not None:
                        logger.error("%s", self._failure[1])
                    return int(code)
        except Exception:
            logger.exception("supervisor failed; stopping every child")
            return int(ExitCode.INTERNAL)
        finally:
            try:
                self.stop()
            finally:
                self._restore_signal_handlers(previous)

    def start(self) -> None:
        """
        Run `setup()`, start every child in order, wait until all are READY, print the line.

        On failure everything started is stopped and `cleanup()` has run before this
        raises.

        Raises:
            StartupError: `setup()` raised, a child exited before it was ready, a child
                was not ready within `tree.ready_timeout_s`, restart intensity was
                exceeded, or a stop signal arrived (then `code` is ExitCode.OK).
        """
        if self._started:
            raise RuntimeError("supervisor already started")
        self._started = True
        self._starting = True
        try:
            self._open()
            if self._setup is not None:
                try:
                    self._setup()
                except Exception as exc:
                    raise StartupError(f"setup failed: {type(exc).__name__}: {exc}") from exc
            deadline = self._clock() + self._tree.ready_timeout_s
            for slot in self._slots:
                if slot.state is ChildState.STOPPED:
                    self._start_slot(slot)
                if slot.spec.ready_before_next:
                    self._await(lambda: slot.ready or slot.state is ChildState.DONE, deadline)
            self._await(self._all_ready, deadline)
            self._starting = False
            self._announce_ready()
        except BaseException:
            self.stop()
            raise

    def _await(self, done: Callable[[], bool], deadline: float) -> None:
        """Run the loop until `done()` or the start-up deadline."""
        while not done():
            remaining = deadline - self._clock()
            if remaining <= 0:
                # Name the children that were started and are late, not those still
                # waiting behind them for their turn (ready_before_next).
                late = [s for s in self._slots if self._awaits_ready(s)]
                started = [s for s in late if s.state is not ChildState.STOPPED]
                missing = [s.spec.name for s in (started or late)]
                raise StartupError(
                    f"child {', '.join(missing)} not ready within "
                    f"{self._tree.ready_timeout_s:g}s"
                )
            result = self.poll(remaining)
            if result is not None:
                reason = self._failure[1] if self._failure else "stopped during start-up"
                raise StartupError(reason, ExitCode(result))

    def poll(self, timeout_s: float | None) -> int | None:
        """
        Wait up to `timeout_s` (None: until something happens) and handle what happened.

        Returns:
            None to keep going, or the exit code when the supervisor must stop (a stop
            signal, every child finished, intensity exceeded, start-up failure).
        """
        if self._selector is None:
            raise RuntimeError("supervisor not started")
        wait = timeout_s
        due = [
            s.restart_at
            for s in self._slots
            if s.state is ChildState.BACKOFF and s.restart_at is not None and not self._gated(s)
        ] + [s.ready_deadline for s in self._slots if s.ready_deadline is not None]
        if due:
            until = max(0.0, min(due) - self._clock())
            wait = until if wait is None else min(wait, until)
        if self._signal is not None or self._status_requested or self._child_signal:
            wait = 0.0
        for key, _ in self._selector.select(wait):
            kind, slot = key.data
            # NB: an earlier event of this batch may have stopped this slot's child (a
            # rest_for_one sibling): its descriptors are then gone and the event stale.
            if kind == "wakeup":
                self._drain_wakeup()
            elif kind == "ready" and slot is not None and slot.ready_fd == key.fd:
                self._on_ready_readable(slot)
            elif kind == "exit" and slot is not None and self._is_sentinel(slot, key.fd):
                self._on_exit(slot)
            if self._failure is not None:
                return self._failure[0]
        if self._child_signal:
            # Backup for a sentinel held open by a grandchild that inherited it: SIGCHLD
            # says some child changed state; exitcode reaps without blocking.
            self._child_signal = False
            for slot in self._slots:
                process = slot.process
                if slot.state is ChildState.RUNNING and process is not None:
                    if process.exitcode is not None:
                        self._on_exit(slot)
                if self._failure is not None:
                    return self._failure[0]
        if self._signal is not None:
            logger.info(
                "stop signal received signal=%s; stopping children in reverse order",
                signal.Signals(self._signal).name,
            )
            return ExitCode.OK
        if self._status_requested:
            self._status_requested = False
            self._log_status()
        self._check_ready_deadlines()
        self._restart_due()
        if self._failure is not None:
            return self._failure[0]
        if all(s.state is ChildState.DONE for s in self._slots):
            logger.info("every child finished; supervisor exits")
            return ExitCode.OK
        return None

    def stop(self) -> None:
        """
        Stop every running child in reverse start order, then run `cleanup()`; idempotent.

        Each child gets SIGTERM, then SIGKILL after its `shutdown_timeout_s`.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stopping = True
        try:
            for slot in reversed(self._slots):
                if slot.process is not None:
                    self._stop_slot(slot)
                if slot.state is not ChildState.DONE:
                    slot.state = ChildState.STOPPED
        finally:
            try:
                if self._cleanup is not None and self._started:
                    self._cleanup()
            finally:
                self._close()

    def status(self) -> Status:
        """A snapshot of every child: state, pid, readiness, restarts, health (psutil)."""
        children = []
        for slot in self._slots:
            pid = slot.process.pid if slot.process is not None else None
            health, rss = self._health(slot, pid)
            children.append(
                ChildStatus(
                    name=slot.spec.name,
                    group=slot.group.name,
                    state=slot.state,
                    pid=pid,
                    ready=slot.ready,
                    info=dict(slot.info),
                    restarts=slot.restarts,
                    last_exit_code=slot.last_exit_code,
                    health=health,
                    rss_bytes=rss,
                )
            )
        self._trim_restarts(self._clock())
        return Status(
            pid=os.getpid(),
            children=tuple(children),
            restarts_in_window=len(self._restart_times),
            all_ready=self._all_ready(),
            stopping=self._stopping,
        )

    # ------------------------------------------------------------------ start/stop

    def _open(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lifeline = os.pipe()
        self._tree_lock = open_tree_lock()
        wakeup = os.pipe()
        for fd in wakeup:
            os.set_blocking(fd, False)
        self._wakeup = wakeup
        self._selector.register(wakeup[0], selectors.EVENT_READ, ("wakeup", None))
        if self._handlers_installed:
            signal.set_wakeup_fd(wakeup[1])

    def _close(self) -> None:
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        fds = list(self._lifeline or ()) + list(self._wakeup or ())
        if self._tree_lock is not None:
            fds.append(self._tree_lock)
        if self._wakeup is not None and self._handlers_installed:
            signal.set_wakeup_fd(-1)
        for fd in fds:
            os.close(fd)
        self._lifeline = None
        self._wakeup = None
        self._tree_lock = None

    def _private_fds(self, exclude: int) -> tuple[int, ...]:
        assert self._lifeline is not None and self._wakeup is not None
        assert self._selector is not None
        fds = [self._lifeline[1], *self._wakeup]
        fileno = getattr(self._selector, "fileno", None)
        if callable(fileno):
            fds.append(int(fileno()))
        fds.extend(s.ready_fd for s in self._slots if s.ready_fd is not None and s.ready_fd != exclude)
        return tuple(fds)

    def _start_slot(self, slot: _Slot) -> None:
        assert self._lifeline is not None and self._selector is not None
        if threading.active_count() != 1:
            # Fork copies only the calling thread: locks held by others stay locked forever.
            raise RuntimeError(
                f"refusing to fork child {slot.spec.name}: the supervisor has "
                f"{threading.active_count()} threads (it must have exactly one)"
            )
        ready_r, ready_w = os.pipe()
        process = self._context.Process(
            target=bootstrap,
            args=(
                slot.spec,
                self._lifeline[0],
                ready_w,
                self._private_fds(ready_r),
                dict(slot.info),
                slot.restarts,
                -1 if self._tree_lock is None else self._tree_lock,
                self._cleanup,
            ),
            name=slot.spec.name,
            daemon=False,
        )
        try:
            process.start()
        finally:
            os.close(ready_w)
        os.set_blocking(ready_r, False)
        slot.process = process
        slot.ready_fd = ready_r
        slot.decoder = FrameDecoder()
        slot.state = ChildState.RUNNING
        slot.ready = not slot.spec.reports_ready
        slot.ever_ready = slot.ever_ready or slot.ready
        slot.info = {}
        slot.started_at = self._clock()
        slot.restart_at = None
        # At start-up the global deadline applies; a restarted child gets its own.
        slot.ready_deadline = (
            None if slot.ready or self._starting else slot.started_at + self._tree.ready_timeout_s
        )
        self._selector.register(process.sentinel, selectors.EVENT_READ, ("exit", slot))
        self._selector.register(ready_r, selectors.EVENT_READ, ("ready", slot))
        logger.info("child started name=%s pid=%s group=%s", slot.spec.name, process.pid, slot.group.name)

    def _stop_slot(self, slot: _Slot) -> None:
        process = slot.process
        assert process is not None
        if process.exitcode is None:
            pid = process.pid
            assert pid is not None
            logger.info("stopping child name=%s pid=%s", slot.spec.name, pid)
            try:
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGCONT)  # a SIGSTOPped child must run to see SIGTERM
            except ProcessLookupError:
                pass  # already exited; join() below reaps it
            process.join(slot.spec.shutdown_timeout_s)
            if process.exitcode is None:
                logger.warning(
                    "child did not stop in time; killing name=%s pid=%s timeout_s=%s",
                    slot.spec.name,
                    pid,
                    slot.spec.shutdown_timeout_s,
                )
                process.kill()
                process.join()
        slot.last_exit_code = process.exitcode
        self._release(slot)
        slot.state = ChildState.STOPPED
        slot.ready = False

    def _release(self, slot: _Slot) -> None:
        """Forget a reaped child's process and pipes."""
        process = slot.process
        if process is not None:
            if self._selector is not None:
                self._unregister(process.sentinel)
            process.close()
        if slot.ready_fd is not None:
            if self._selector is not None:
                self._unregister(slot.ready_fd)
            os.close(slot.ready_fd)
        slot.process = None
        slot.ready_fd = None
        slot.ready_deadline = None

    def _unregister(self, fd: int) -> None:
        assert self._selector is not None
        try:
            self._selector.unregister(fd)
        except KeyError:
            pass  # never registered (start failed half-way)

    # --------------------------------------------------------------------- events

    def _on_ready_readable(self, slot: _Slot) -> None:
        assert slot.ready_fd is not None
        try:
            data = os.read(slot.ready_fd, 65536)
        except BlockingIOError:
            return
        if not data:
            # The child closed its READY pipe (it is exiting); its sentinel will tell.
            self._unregister(slot.ready_fd)
            return
        try:
            messages = slot.decoder.feed(data)
        except ReadinessProtocolError as exc:
            logger.error("bad ready frame; stopping child name=%s error=%s", slot.spec.name, exc)
            self._stop_slot(slot)
            self._after_exit(slot, slot.last_exit_code)
            return
        for message in messages:
            slot.info = dict(message.info)
            slot.ready = True
            slot.ever_ready = True
            slot.ready_deadline = None
            logger.info("child ready name=%s pid=%s info=%s", slot.spec.name, self._pid(slot), slot.info)

    def _on_exit(self, slot: _Slot) -> None:
        process = slot.process
        assert process is not None
        # The sentinel closes as the child exits; reaping follows at once.
        process.join(1.0)
        if process.exitcode is None:
            return  # spurious wake-up: still running
        code = process.exitcode
        # Drain a READY written just before exiting: the exit may be seen first in a batch,
        # and a child that was ready and then crashed is restarted, not a start-up failure.
        if slot.ready_fd is not None:
            try:
                for message in slot.decoder.feed(os.read(slot.ready_fd, 65536)):
                    slot.info = dict(message.info)
                    slot.ever_ready = True
            except (BlockingIOError, ReadinessProtocolError):
                pass  # nothing pending, or garbage from a dying child: it is gone anyway
        slot.last_exit_code = code
        self._release(slot)
        slot.ready = False
        level = logging.INFO if code == 0 else logging.WARNING
        logger.log(level, "child exited name=%s code=%s", slot.spec.name, _describe_code(code))
        self._after_exit(slot, code)

    def _after_exit(self, slot: _Slot, code: int | None) -> None:
        """Apply the restart policy and the group strategy to a child that ended."""
        if self._stopping or self._signal is not None:
            return  # being stopped: nothing restarts
        if self._starting and slot.spec.reports_ready and not slot.ever_ready:
            self._fail(
                ExitCode.STARTUP_FAILED,
                f"child {slot.spec.name} exited with code {_describe_code(code)} before it was ready",
            )
            return
        normal = code == 0
        if slot.spec.restart is Restart.TEMPORARY or (
            slot.spec.restart is Restart.TRANSIENT and normal
        ):
            slot.state = ChildState.DONE
            return
        now = self._clock()
        self._restart_times.append(now)
        self._trim_restarts(now)
        limit = self._tree.intensity
        if len(self._restart_times) > limit.max_restarts:
            self._fail(
                ExitCode.INTENSITY,
                f"restart intensity exceeded restarts={len(self._restart_times)} "
                f"max_restarts={limit.max_restarts} window_s={limit.window_s:g} "
                f"last_child={slot.spec.name}; shutting down",
            )
            return
        if now - slot.started_at >= self._tree.backoff.reset_after_s:
            slot.consecutive = 0
        slot.consecutive += 1
        delay = self._tree.backoff.delay_s(slot.consecutive)
        affected = self._affected(slot)
        for other in reversed(affected):
            if other is not slot and other.process is not None:
                logger.info(
                    "stopping sibling for restart name=%s because=%s strategy=%s",
                    other.spec.name,
                    slot.spec.name,
                    slot.group.strategy.value,
                )
                self._stop_slot(other)
        for other in affected:
            if other is not slot and other.spec.restart is Restart.TEMPORARY:
                other.state = ChildState.DONE
                continue
            if other.state is ChildState.DONE and other is not slot:
                continue
            other.state = ChildState.BACKOFF
            other.restart_at = now + delay
        logger.info(
            "restarting name=%s delay_s=%.3f consecutive=%s restarts_in_window=%s",
            ",".join(o.spec.name for o in affected if o.state is ChildState.BACKOFF),
            delay,
            slot.consecutive,
            len(self._restart_times),
        )

    def _affected(self, slot: _Slot) -> list[_Slot]:
        siblings = [s for s in self._slots if s.group is slot.group]
        strategy = slot.group.strategy
        if strategy is Strategy.ONE_FOR_ONE:
            return [slot]
        if strategy is Strategy.REST_FOR_ONE:
            return [s for s in siblings if s.position >= slot.position]
        return siblings

    def _check_ready_deadlines(self) -> None:
        now = self._clock()
        for slot in self._slots:
            if self._failure is not None or self._stopping:
                return
            if slot.ready_deadline is not None and slot.ready_deadline <= now:
                logger.warning(
                    "restarted child not ready in time; stopping it name=%s ready_timeout_s=%g",
                    slot.spec.name,
                    self._tree.ready_timeout_s,
                )
                self._stop_slot(slot)
                self._after_exit(slot, slot.last_exit_code)

    def _restart_due(self) -> None:
        now = self._clock()
        for slot in self._slots:
            if self._failure is not None:
                return
            if (
                slot.state is ChildState.BACKOFF
                and slot.restart_at is not None
                and slot.restart_at <= now
                and not self._gated(slot)
            ):
                slot.restarts += 1
                self._start_slot(slot)

    def _gated(self, slot: _Slot) -> bool:
        """An earlier sibling with `ready_before_next` is running or restarting, not ready."""
        return any(
            other.group is slot.group
            and other.position < slot.position
            and other.spec.ready_before_next
            and not other.ready
            and other.state in (ChildState.RUNNING, ChildState.BACKOFF)
            for other in self._slots
        )

    def _fail(self, code: ExitCode, reason: str) -> None:
        if self._failure is None:
            self._failure = (code, reason)

    # -------------------------------------------------------------------- helpers

    def _awaits_ready(self, slot: _Slot) -> bool:
        return slot.state is not ChildState.DONE and not slot.ready

    def _all_ready(self) -> bool:
        return self._started and not any(self._awaits_ready(s) for s in self._slots)

    def _announce_ready(self) -> None:
        infos = {s.spec.name: dict(s.info) for s in self._slots if s.state is ChildState.RUNNING}
        line = self._ready_line(infos)
        out = self._out if self._out is not None else sys.stdout
        print(line, file=out, flush=True)
        logger.info("all children ready count=%s", len(infos))

    def _trim_restarts(self, now: float) -> None:
        window = self._tree.intensity.window_s
        while self._restart_times and self._restart_times[0] <= now - window:
            self._restart_times.popleft()

    def _is_sentinel(self, slot: _Slot, fd: int) -> bool:
        return slot.process is not None and slot.process.sentinel == fd

    def _pid(self, slot: _Slot) -> int | None:
        return slot.process.pid if slot.process is not None else None

    def _health(self, slot: _Slot, pid: int | None) -> tuple[Health, int | None]:
        if pid is None or slot.state is not ChildState.RUNNING:
            return Health.NOT_RUNNING, None
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                state = proc.status()
                rss = int(proc.memory_info().rss)
        except psutil.NoSuchProcess:
            return Health.GONE, None
        if state == psutil.STATUS_ZOMBIE:
            return Health.ZOMBIE, None
        if state in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
            return Health.STOPPED, rss
        if slot.spec.max_rss_bytes and rss > slot.spec.max_rss_bytes:
            return Health.RSS_OVER_LIMIT, rss
        return Health.OK, rss

    def _log_status(self) -> None:
        snapshot = self.status()
        for child in snapshot.children:
            logger.info(
                "status name=%s state=%s pid=%s ready=%s restarts=%s health=%s rss_bytes=%s",
                child.name,
                child.state.value,
                child.pid,
                child.ready,
                child.restarts,
                child.health.value,
                child.rss_bytes,
            )

    # -------------------------------------------------------------------- signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGUSR1:
            self._status_requested = True
        elif signum == signal.SIGCHLD:
            self._child_signal = True
        elif self._signal is None:
            self._signal = signum

    def _drain_wakeup(self) -> None:
        assert self._wakeup is not None
        try:
            while os.read(self._wakeup[0], 512):
                pass
        except BlockingIOError:
            return

    def _install_signal_handlers(self) -> dict[int, object]:
        previous: dict[int, object] = {}
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD):
            previous[signum] = signal.signal(signum, self._on_signal)
        self._handlers_installed = True
        return previous

    def _restore_signal_handlers(self, previous: dict[int, object]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._handlers_installed = False


def _describe_code(code: int | None) -> str:
    if code is None:
        return "unknown"
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)
