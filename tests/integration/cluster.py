"""
Multi-process test clusters: real `python -m concord.supervisor` processes.

`Cluster` starts N nodes with data dirs under a test's tmp_path, on free ports picked by
binding port 0 (and re-picked if a node then loses a bind race), waits for every ready
line, then for a leader that every node agrees on. `stop()` sends SIGTERM to every
supervisor, waits, SIGKILLs stragglers, and reports leftover processes and /dev/shm
segments. Only processes this module started are ever signalled, by pid.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from concord.net.client import request
from supervisor import parse_ready_line
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEV_SHM = Path("/dev/shm")
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
                [sys.executable, "-m", "concord.supervisor", "--config", str(self.config_path),
                 *self.extra_args],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
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
        prefix_node = "".join(c if c.isalnum() or c in "_." else "_" for c in self.id)[:32]
        for spid in self.killed_supervisors if killed else self.supervisor_pids:
            if not killed and spid in self.killed_supervisors:
                continue
            prefix = f"concord-{prefix_node}-{spid}x"
            names += [n for n in os.listdir(DEV_SHM) if n.startswith(prefix)]
        return names


class Cluster:
    """
    A running test cluster.

    Args:
        tmp_path: where data dirs, configs and logs go.
        n: number of nodes (n1..nN).
        overrides: config sections merged over BASE_SETTINGS.
    """

    def __init__(self, tmp_path: Path, n: int = 3, read_workers: int = 1,
                 **overrides: Mapping[str, object]) -> None:
        self.tmp_path = tmp_path
        self.settings = merged(BASE_SETTINGS, overrides)
        self.read_workers = read_workers
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.nodes: dict[str, NodeProc] = {}
        self.members: list[MemberPorts] = []

    # -- life cycle --------------------------------------------------------------------

    def start(self, attempts: int = 3) -> Cluster:
        for attempt in range(attempts):
            self._write_configs()
            try:
                for node in self.nodes.values():
                    node.launch()
                for node in self.nodes.values():
                    node.wait_ready()
                break
            except StartFailed as exc:
                self.stop()
                if "already in use" not in exc.stderr or attempt == attempts - 1:
                    raise
        self.wait_leader()
        return self

    def _write_configs(self) -> None:
        ports = free_ports(3 * len(self.ids))
        self.members = [MemberPorts(nid, *ports[3 * i:3 * i + 3]) for i, nid in enumerate(self.ids)]
        for nid in self.ids:
            node = self.nodes.get(nid)
            if node is None:
                node = NodeProc(nid, self.tmp_path / f"{nid}.toml", self.tmp_path / "data" / nid,
                                self.tmp_path / f"{nid}.log")
                self.nodes[nid] = node
            self.write_config(node)

    def write_config(self, node: NodeProc, members: Iterable[MemberPorts] | None = None) -> None:
        node.config_path.write_text(render_config(
            node.id, node.data_dir, self.members if members is None else members,
            self.settings, self.read_workers))

    def add_node(self, node_id: str) -> NodeProc:
        """Start a new node that joins (--join) with a config listing every member."""
        ports = free_ports(3)
        member = MemberPorts(node_id, *ports)
        node = NodeProc(node_id, self.tmp_path / f"{node_id}.toml",
                        self.tmp_path / "data" / node_id, self.tmp_path / f"{node_id}.log",
                        extra_args=("--join",))
        self.nodes[node_id] = node
        self.ids.append(node_id)
        self.members.append(member)
        self.write_config(node)
        node.launch()
        node.wait_ready()
        return node

    def member_ports(self, node_id: str) -> MemberPorts:
        return next(m for m in self.members if m.id == node_id)

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.launch()
        node.wait_ready()

    def stop(self) -> None:
        for node in self.nodes.values():  # SIGTERM every node first, then wait for each
            node.remember_children()
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            node.terminate()

    def leftovers(self) -> tuple[list[int], list[str]]:
        """(pids still alive, /dev/shm segments left) of every node ever started."""
        pids = [p for n in self.nodes.values() for p in n.alive_pids()]
        segs = [s for n in self.nodes.values() for s in n.shm_segments()]
        return pids, segs

    def remove_killed_segments(self) -> None:
        """Unlink the stores of supervisors a test SIGKILLed (their cleanup() never ran)."""
        for node in self.nodes.values():
            for name in node.shm_segments(killed=True):
                (DEV_SHM / name).unlink(missing_ok=True)

    # -- talking to it -------------------------------------------------------------------

    def request(self, node_id: str, msg: Mapping[str, object], timeout_ms: int = 3000,
                retries: int = 0) -> dict[str, object]:
        return request(self.nodes[node_id].client, msg, timeout_ms=timeout_ms, retries=retries)

    def status(self, node_id: str) -> dict[str, object] | None:
        try:
            reply = self.request(node_id, {"op": "status"}, timeout_ms=1000)
        except Exception:  # noqa: BLE001 - a node that does not answer has no status
            return None
        return reply if reply.get("ok") else None

    def statuses(self, ids: Iterable[str] | None = None) -> dict[str, dict[str, object] | None]:
        return {nid: self.status(nid) for nid in (ids or self.running_ids())}

    def running_ids(self) -> list[str]:
        return [nid for nid, n in self.nodes.items() if n.running]

    def leader(self, ids: Iterable[str] | None = None) -> str | None:
        """The leader every given node agrees on (same term), or None."""
        sts = self.statuses(ids)
        if any(s is None for s in sts.values()):
            return None
        leaders = {(s["leader"], s["term"]) for s in sts.values() if s is not None}
        if len(leaders) != 1:
            return None
        (leader, _), = leaders
        if not isinstance(leader, str):
            return None
        st = sts.get(leader)
        return leader if st is not None and st["role"] == "leader" else None

    def wait_leader(self, ids: Iterable[str] | None = None, timeout_s: float = 20.0) -> str:
        ids = list(ids) if ids is not None else None
        found = wait_until(lambda: self.leader(ids), timeout_s,
                           lambda: f"statuses={self.statuses(ids)}")
        assert found is not None
        return found

    def followers(self) -> list[str]:
        leader = self.wait_leader()
        return [n for n in self.running_ids() if n != leader]

    def wait_converged(self, ids: Iterable[str] | None = None, timeout_s: float = 20.0) -> None:
        """Every given node applied the same index with the same state hash."""
        ids = list(ids) if ids is not None else None

        def same() -> bool:
            sts = self.statuses(ids)
            if any(s is None for s in sts.values()):
                return False
            seen = {(s["applied"], s["state_hash"]) for s in sts.values() if s is not None}
            return len(seen) == 1

        wait_until(same, timeout_s, lambda: f"statuses={self.statuses(ids)}")
