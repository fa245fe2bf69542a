"""
Multi-process test clusters: real `python -m concord.supervisor` processes.

`Cluster` starts N nodes with data dirs under a test's tmp_path, on free ports picked by
binding port 0 (and re-picked if a node then loses a bind race), waits for every ready
line, then for a leader that every node agrees on. `stop()` sends SIGTERM to every
supervisor, waits, SIGKILLs stragglers, and reports leftover processes and /dev/shm
segments. Only processes this module started are ever signalled, by pid.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from concord.chaos.procs import (
    BASE_SETTINGS,
    DEV_SHM,
    ROOT,
    STARTUP_TIMEOUT_S,
    MemberPorts,
    NodeProc,
    StartFailed,
    as_int,
    as_maps,
    free_ports,
    merged,
    render_config,
)
from concord.client.raw import request
from concord.net.curve import CurveClient
from tests.helpers import wait_until

__all__ = [  # the node-process helpers live in concord.chaos.procs (shared with the chaos tool)
    "BASE_SETTINGS", "DEV_SHM", "ROOT", "STARTUP_TIMEOUT_S", "Cluster", "MemberPorts",
    "NodeProc", "StartFailed", "as_int", "as_maps", "free_ports", "merged", "render_config",
]


class Cluster:
    """
    A running test cluster.

    Args:
        tmp_path: where data dirs, configs and logs go.
        n: number of nodes (n1..nN).
        overrides: config sections merged over BASE_SETTINGS.
        ids: the node ids instead of n1..nN (n is then their number).
    """

    def __init__(self, tmp_path: Path, n: int = 3, read_workers: int = 1,
                 ids: Sequence[str] | None = None,
                 **overrides: Mapping[str, object]) -> None:
        self.tmp_path = tmp_path
        self.settings = merged(BASE_SETTINGS, overrides)
        #: per-node config overrides merged over `settings` (e.g. each node's fault file)
        self.node_settings: dict[str, dict[str, dict[str, object]]] = {}
        #: per-node environment additions for the supervisor (e.g. libfaketime's)
        self.node_env: dict[str, dict[str, str]] = {}
        self.read_workers = read_workers
        #: sent with `status` requests (a cluster with [auth] enabled needs one)
        self.token: str | None = None
        #: CURVE settings of every request the helper sends (a cluster with
        #: curve.client_secret_key_file needs them): `CurveClient.of(server_key)`
        self.curve: CurveClient | None = None
        self.ids = list(ids) if ids is not None else [f"n{i + 1}" for i in range(n)]
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
                                self.tmp_path / f"{nid}.log", env=self.node_env.get(nid, {}))
                self.nodes[nid] = node
            self.write_config(node)

    def write_config(self, node: NodeProc, members: Iterable[MemberPorts] | None = None) -> None:
        node.config_path.write_text(render_config(
            node.id, node.data_dir, self.members if members is None else members,
            merged(self.settings, self.node_settings.get(node.id, {})), self.read_workers))

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

    def remove_killed_leftovers(self) -> None:
        """Unlink the stores and remove the ipc folders of supervisors a test SIGKILLed."""
        for node in self.nodes.values():
            node.remove_killed_leftovers()

    # -- talking to it -------------------------------------------------------------------

    def request(self, node_id: str, msg: Mapping[str, object], timeout_ms: int = 3000,
                retries: int = 0) -> dict[str, object]:
        return request(self.nodes[node_id].client, msg, timeout_ms=timeout_ms, retries=retries,
                       curve=self.curve)

    def status(self, node_id: str) -> dict[str, object] | None:
        try:
            msg: dict[str, object] = {"op": "status"}
            if self.token is not None:
                msg["token"] = self.token
            reply = self.request(node_id, msg, timeout_ms=1000)
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
