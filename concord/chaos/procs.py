"""
Real node processes: configs, free ports, start / ready line / SIGTERM / SIGKILL by pid.

Shared by the chaos tool (concord.chaos) and the integration tests' `Cluster`
(tests/integration/cluster.py). `NodeProc` remembers every pid ever seen in a node's
process tree so that everything it started can be ended by pid, and the /dev/shm
segments of its supervisors can be found. Only processes started here are signalled.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]

import concord.supervisor_clash  # noqa: F401  (first: names a supervisord clash)
from concord.shm.layout import ipc_folder_name, node_part
from supervisor import parse_ready_line

__all__ = [
    "signal_pids",
    "BASE_SETTINGS", "DEV_SHM", "ROOT", "STARTUP_TIMEOUT_S", "MemberPorts", "NodeProc",
    "StartFailed", "as_int", "as_maps", "free_ports", "merged", "render_config",
]

ROOT = Path(__file__).resolve().parents[2]  # the repository
DEV_SHM = Path("/dev/shm")
TEMP_DIR = Path(tempfile.gettempdir())  # where supervisors make their ipc folders
STARTUP_TIMEOUT_S = 30.0

#: Settings every test cluster uses unless overridden (fast ticks, one reader per node:
#: the test host has 2 cores shared with other work).
BASE_SETTINGS: dict[str, dict[str, object]] = {
    "raft": {"tick_ms": 50, "election_ticks": 10},
    "supervisor": {"ready_timeout_s": 20.0, "shutdown_timeout_s": 3.0,
                   "backoff_initial_s": 0.05, "max_restarts": 10},
    "logging": {"level": "INFO"},
}


def as_int(value: object) -> int:
    """A reply field that must be an int."""
    assert isinstance(value, int), value
    return value


def as_maps(value: object) -> list[dict[str, object]]:
    """A reply field that must be a list of maps (e.g. members)."""
    assert isinstance(value, list) and all(isinstance(v, dict) for v in value), value
    return value


def free_ports(count: int) -> list[int]:
    """Ports the OS reports free right now (a later bind can still lose a race)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _toml(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class MemberPorts:
    id: str
    client_port: int
    peer_port: int
    events_port: int


def render_config(
    node_id: str,
    data_dir: Path,
    members: Iterable[MemberPorts],
    settings: Mapping[str, Mapping[str, object]],
    read_workers: int = 1,
) -> str:
    lines = ["[node]", f"id = {_toml(node_id)}", f"data_dir = {_toml(str(data_dir))}",
             f"read_workers = {read_workers}", ""]
    for m in members:
        lines += ["[[cluster.members]]", f"id = {_toml(m.id)}", 'host = "127.0.0.1"',
                  f"client_port = {m.client_port}", f"peer_port = {m.peer_port}",
                  f"events_port = {m.events_port}", ""]
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def merged(base: Mapping[str, Mapping[str, object]],
           overrides: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, object]]:
    out = {k: dict(v) for k, v in base.items()}
    for section, values in overrides.items():
        out.setdefault(section, {}).update(values)
    return out


class StartFailed(Exception):
    """A supervisor exited before its ready line."""

    def __init__(self, code: int, stderr: str) -> None:
        super().__init__(f"supervisor exited with code {code} before ready:\n{stderr[-3000:]}")
        self.code = code
        self.stderr = stderr


@dataclass
class NodeProc:
    """One node: its config file, data dir and (while running) its supervisor process."""

    id: str
    config_path: Path
    data_dir: Path
    log_path: Path
    extra_args: tuple[str, ...] = ()
    #: run the supervisor under this command (e.g. ("faketime", "-f", "+1h")) ...
    prefix: tuple[str, ...] = ()
    #: ... with these variables added to the environment (tests only)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    endpoints: dict[str, str] = field(default_factory=dict)
    pids: set[int] = field(default_factory=set)  # every pid ever seen in this node's tree
    supervisor_pids: list[int] = field(default_factory=list)
    killed_supervisors: list[int] = field(default_factory=list)  # SIGKILLed: no cleanup()

    @property
    def client(self) -> str:
        return self.endpoints["client"]

    def launch(self) -> None:
        log = open(self.log_path, "a")
        try:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "concord.supervisor", "--config",
                 str(self.config_path), *self.extra_args],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                env={**os.environ, **self.env} if self.env else None,
            )
        finally:
            log.close()
        self.pids.add(self.proc.pid)
        self.supervisor_pids.append(self.proc.pid)

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> dict[str, str]:
        """Read the ready line; raise StartFailed if the supervisor exits first."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.id}: no ready line within {timeout_s}s:\n"
                                         f"{self.stderr()[-3000:]}")
                if sel.select(remaining):
                    line = proc.stdout.readline()
                    if line:
                        _, self.endpoints = parse_ready_line(line.strip())
                        self.remember_children()
                        return self.endpoints
                    code = proc.wait(timeout=10)
                    raise StartFailed(code, self.stderr())
        finally:
            sel.close()

    def stderr(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def remember_children(self) -> None:
        if self.proc is None:
            return
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM the supervisor, wait, SIGKILL the whole tree if it hangs."""
        proc = self.proc
        if proc is None:
            return None
        self.remember_children()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill_tree()
        code = proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        self.proc = None
        return code

    def kill_tree(self) -> None:
        """SIGKILL the supervisor and every process of its tree at once."""
        self.remember_children()
        for pid in sorted(self.pids):
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        if self.proc is not None:
            self.killed_supervisors.append(self.proc.pid)
            self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def alive_pids(self) -> list[int]:
        alive = []
        for pid in self.pids:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    def shm_segments(self, killed: bool = False) -> list[str]:
        """Segments left by this node's supervisors (those SIGKILLed if `killed`)."""
        names: list[str] = []
        prefix_node = node_part(self.id)
        for spid in self.killed_supervisors if killed else self.supervisor_pids:
            if not killed and spid in self.killed_supervisors:
                continue
            prefix = f"concord-{prefix_node}-{spid}x"
            names += [n for n in os.listdir(DEV_SHM) if n.startswith(prefix)]
        return names

    def ipc_folders(self, killed: bool = False) -> list[Path]:
        """Private ipc folders left by this node's supervisors (those SIGKILLed if `killed`)."""
        folders: list[Path] = []
        part = node_part(self.id)
        for spid in self.killed_supervisors if killed else self.supervisor_pids:
            if not killed and spid in self.killed_supervisors:
                continue
            folders += TEMP_DIR.glob(ipc_folder_name(part, f"{spid}x") + "*")
        return folders

    def remove_killed_leftovers(self) -> None:
        """
        Unlink the segments and remove the ipc folders of this node's SIGKILLed
        supervisors: their cleanup() never ran, and nobody else's sweep is due.
        """
        for name in self.shm_segments(killed=True):
            (DEV_SHM / name).unlink(missing_ok=True)
        for folder in self.ipc_folders(killed=True):
            shutil.rmtree(folder, ignore_errors=True)


def signal_pids(pids: Iterable[int], sig: signal.Signals) -> None:
    """Send `sig` to each pid that still runs (by pid; never by name)."""
    for pid in pids:
        try:
            psutil.Process(pid).send_signal(sig)
        except psutil.NoSuchProcess:
            pass
