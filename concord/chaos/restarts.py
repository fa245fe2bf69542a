"""
Whole-cluster crash rounds: writers write, every node takes a snapshot, every
process of every node is SIGKILLed at once, all nodes restart; then a leader must be
elected and every acknowledged write must be there.

Used by tests/integration/test_whole_restart.py (a few rounds) and
bench/restart_rounds.py (50 rounds, with the recovery time). Only processes this module
started are ever signalled, by pid.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]
import zmq

from concord.chaos.procs import (
    BASE_SETTINGS,
    MemberPorts,
    NodeProc,
    free_ports,
    merged,
    render_config,
)
from concord.errors import ConcordError
from concord.client.raw import request
from concord.storage.membership import has_membership
from concord.storage.snapshot import list_snapshots, read_snapshot

__all__ = ["RestartRounds", "RoundResult"]

#: Most keys one verifying get_many asks for (the protocol's bulk limit).
_BATCH = 500


@dataclass(slots=True)
class RoundResult:
    """
    Attributes:
        number: the round (1-based).
        snapshot: whether every node wrote a snapshot in the life this round killed.
        acked: acknowledged writes so far (all rounds).
        lost: acknowledged keys that are missing or hold another value after the restart.
        leader: the leader elected after the restart (None: none within the deadline).
        recovery_s: kill -> first write acknowledged after the restart (None: none).
        ready_s: kill -> every node printed its ready line.
        leader_s: kill -> a leader every node agrees on was seen (None: none).
        no_membership: snapshots (files) written with an empty voter list.
    """

    number: int
    snapshot: bool
    acked: int = 0
    lost: list[str] = field(default_factory=list)
    leader: str | None = None
    recovery_s: float | None = None
    ready_s: float = 0.0
    leader_s: float | None = None
    no_membership: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.leader is not None and not self.lost and self.recovery_s is not None
                and not self.no_membership)


class RestartRounds:
    """
    A cluster of `nodes` real supervisors under `folder`, `writers` writer threads, and
    the rounds.

    Args:
        folder: data dirs, configs and logs go here.
        snapshot_entries: the nodes' storage.snapshot_entries (small: snapshots often).
        segment_bytes: the nodes' storage.segment_bytes (small: snapshots remove the log
            they cover, so nothing but the snapshot holds the membership).
        deadline_s: how long a round waits for a snapshot, a leader or a write.
    """

    def __init__(self, folder: Path, nodes: int = 3, writers: int = 4,
                 snapshot_entries: int = 200, segment_bytes: int = 16384,
                 deadline_s: float = 30.0) -> None:
        self.folder = folder
        self.deadline_s = deadline_s
        self.settings = merged(BASE_SETTINGS, {"storage": {"snapshot_entries": snapshot_entries,
                                                           "segment_bytes": segment_bytes}})
        ports = free_ports(3 * nodes)
        ids = [f"n{i + 1}" for i in range(nodes)]
        self.members = [MemberPorts(nid, *ports[3 * i:3 * i + 3]) for i, nid in enumerate(ids)]
        self.nodes = {
            nid: NodeProc(nid, folder / f"{nid}.toml", folder / "data" / nid, folder / f"{nid}.log")
            for nid in ids
        }
        for node in self.nodes.values():
            node.config_path.write_text(render_config(node.id, node.data_dir, self.members,
                                                      self.settings, 1))
        self.writers = writers
        self._lock = threading.Lock()
        self._acked: dict[str, int] = {}  # key -> value, each key written once
        self._first_ack_after = 0.0  # monotonic: acks at or after it set _first_ack_at
        self._first_ack_at: float | None = None
        self._leader_endpoint = ""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._killed_pids: set[int] = set()

    # -- the cluster -----------------------------------------------------------------------

    def start(self) -> None:
        """Start every node, then the writers."""
        self._launch()
        for i in range(self.writers):
            thread = threading.Thread(target=self._write_loop, args=(i,), daemon=True,
                                      name=f"restart-writer-{i}")
            thread.start()
            self._threads.append(thread)

    def _launch(self) -> None:
        for node in self.nodes.values():
            node.launch()
        for node in self.nodes.values():
            node.wait_ready()

    def kill_all(self) -> float:
        """SIGKILL every process of every node at once; the monotonic time of the kill."""
        pids: list[int] = []
        for node in self.nodes.values():
            if node.proc is None:
                continue
            try:
                tree = psutil.Process(node.proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                tree = []
            mine = [node.proc.pid, *(p.pid for p in tree)]
            node.pids.update(mine)
            pids += mine
        killed_at = time.monotonic()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)  # our own processes, by pid
            except ProcessLookupError:
                pass
        self._killed_pids.update(pids)
        for node in self.nodes.values():
            if node.proc is not None:
                node.killed_supervisors.append(node.proc.pid)
                node.proc.wait(timeout=10)
                if node.proc.stdout is not None:
                    node.proc.stdout.close()
                node.proc = None
        for pid in pids:  # children of a killed supervisor are reparented: wait them out
            try:
                psutil.Process(pid).wait(timeout=10)
            except (psutil.NoSuchProcess, psutil.TimeoutExpired, ChildProcessError):
                pass
        for node in self.nodes.values():  # the store and ipc folder of a SIGKILLed supervisor
            node.remove_killed_leftovers()
        return killed_at

    def close(self) -> tuple[list[int], list[str]]:
        """Stop writers and nodes (SIGTERM); (pids still alive, /dev/shm segments left)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        for node in self.nodes.values():
            node.remember_children()
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            node.terminate()
        pids = [p for n in self.nodes.values() for p in n.alive_pids()]
        segments = [s for n in self.nodes.values() for s in n.shm_segments()]
        return pids, segments

    def _call(self, endpoint: str, msg: dict[str, object], ctx: zmq.Context[zmq.Socket[bytes]],
              timeout_ms: int = 1000) -> dict[str, object] | None:
        try:
            return request(endpoint, msg, timeout_ms=timeout_ms, retries=0, ctx=ctx)
        except ConcordError:
            return None

    def leader(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> str | None:
        """The node every node names leader at one term, if it says it leads."""
        seen: set[tuple[object, object]] = set()
        roles: dict[str, object] = {}
        for nid, node in self.nodes.items():
            if "client" not in node.endpoints:
                return None
            status = self._call(node.client, {"op": "status"}, ctx)
            if status is None or not status.get("ok"):
                return None
            seen.add((status.get("leader"), status.get("term")))
            roles[nid] = status.get("role")
        if len(seen) != 1:
            return None
        ((leader, _),) = seen
        return leader if isinstance(leader, str) and roles.get(leader) == "leader" else None

    # -- writers -------------------------------------------------------------------------------

    def _write_loop(self, writer: int) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        ids = sorted(self.nodes)
        target = ids[writer % len(ids)]
        seq = 0
        try:
            while not self._stop.is_set():
                node = self.nodes[target]
                endpoint = node.endpoints.get("client") if node.proc is not None else None
                if endpoint is None:
                    self._stop.wait(0.05)  # the node is down: look again soon
                    target = ids[(ids.index(target) + 1) % len(ids)]
                    continue
                seq += 1
                key = f"w{writer}:{seq}"
                sent = time.monotonic()
                reply = self._call(endpoint, {"op": "put", "key": key, "value": seq}, ctx)
                if reply is not None and reply.get("ok"):
                    with self._lock:
                        self._acked[key] = seq
                        if self._first_ack_at is None and sent >= self._first_ack_after:
                            self._first_ack_at = time.monotonic()
                    continue
                hint = reply.get("leader") if reply is not None else None
                named = [n for n, p in self.nodes.items() if p.endpoints.get("client") == hint]
                if named:
                    target = named[0]
                else:
                    target = ids[(ids.index(target) + 1) % len(ids)]
                    self._stop.wait(0.02)  # no leader known: do not spin
        finally:
            ctx.destroy(linger=0)

    def acked(self) -> dict[str, int]:
        with self._lock:
            return dict(self._acked)

    # -- one round ----------------------------------------------------------------------------

    def _snapshots(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for nid, node in self.nodes.items():
            found = list_snapshots(node.data_dir / "snap")
            out[nid] = found[-1][0] if found else 0
        return out

    def _without_membership(self) -> list[str]:
        """The snapshot files of every node whose membership has no voter."""
        bad = []
        for node in self.nodes.values():
            for _, _, path in list_snapshots(node.data_dir / "snap"):
                meta = read_snapshot(path).snapshot.meta
                if not has_membership(meta.conf_state):
                    bad.append(str(path))
        return bad

    def _wait(self, predicate: Callable[[], bool]) -> bool:
        """Poll `predicate` until it holds (True) or the round's deadline passes (False)."""
        deadline = time.monotonic() + self.deadline_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            self._stop.wait(0.05)
        return False

    def run_round(self, number: int, snapshot: bool, writes: int = 50) -> RoundResult:
        """
        Write (until every node wrote a new snapshot if `snapshot`, else `writes` more
        acknowledged writes), kill everything, restart, then wait for a leader and a
        write acknowledged after the kill, and read back every acknowledged key.
        """
        result = RoundResult(number, snapshot)
        before_snaps = self._snapshots()
        before_acked = len(self.acked())
        if snapshot:
            got = self._wait(lambda: all(i > before_snaps[n] for n, i in self._snapshots().items()))
            result.snapshot = got
        else:
            self._wait(lambda: len(self.acked()) >= before_acked + writes)
        with self._lock:
            self._first_ack_at = None
            self._first_ack_after = float("inf")
        killed_at = self.kill_all()
        acked = self.acked()  # nothing is acknowledged by a dead cluster
        result.no_membership = self._without_membership()
        with self._lock:
            self._first_ack_after = killed_at
        self._launch()
        result.ready_s = time.monotonic() - killed_at
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            found: list[str] = []

            def elected() -> bool:
                leader = self.leader(ctx)
                if leader is not None:
                    found.append(leader)
                return leader is not None

            if self._wait(elected):
                result.leader = found[-1]
                result.leader_s = time.monotonic() - killed_at
            if self._wait(lambda: self._first_ack_at is not None):
                assert self._first_ack_at is not None
                result.recovery_s = self._first_ack_at - killed_at
            result.acked = len(acked)
            if result.leader is not None:
                result.lost = self._lost(acked, ctx)
        finally:
            ctx.destroy(linger=0)
        return result

    def _lost(self, acked: dict[str, int], ctx: zmq.Context[zmq.Socket[bytes]]) -> list[str]:
        """Acknowledged keys that a strong read at the leader does not return as written."""
        keys = sorted(acked)
        lost: list[str] = []
        for lo in range(0, len(keys), _BATCH):
            chunk = keys[lo:lo + _BATCH]
            values: object = None
            for _ in range(20):  # the leader may change right after an election
                leader = self.leader(ctx)
                if leader is None:
                    self._stop.wait(0.1)
                    continue
                reply = self._call(self.nodes[leader].client,
                                   {"op": "get_many", "keys": chunk, "consistency": "strong"},
                                   ctx, timeout_ms=5000)
                if reply is not None and reply.get("ok"):
                    values = reply.get("values")
                    break
            if not isinstance(values, dict):
                return [f"could not read keys {chunk[0]}..{chunk[-1]}"]
            lost += [k for k in chunk if values.get(k) != acked[k]]
        return lost
