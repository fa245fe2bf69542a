"""
One chaos run against a local cluster of real node processes.

Threads, each on its own rhythm and its own random stream forked from one seed:
- clients (concord.chaos.clients): writers and readers on a few keys, every operation
  recorded for the linearizability checker;
- status poller: who leads which term (leader changes, one leader per term);
- nemeses (concord.chaos.nemeses): preempt, membership changes, link faults, kill, pause,
  holders (SIGKILL a lock-holder process, restart it);
- recipes (concord.chaos.recipes): lock-holder processes contending for one lock, and
  incrementer threads counting with `incr`.
At most (n - 1) // 2 nodes are disturbed (removed, killed or paused) at any moment, so
a majority of the original size always remains.

The end: stop the clients and nemeses, heal every fault, resume paused nodes, restart
killed ones, read every key once more with strong consistency, stop the cluster
(SIGTERM, then SIGKILL by pid), read each node's log from its data dir, and check (see
concord.chaos.checks and concord.sim.linearizability). Live processes are not
deterministic: a seed replays the same schedule of choices, not the same timing.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import zmq

from concord.chaos.checks import NodeLog, check_acked, check_leaders, check_logs, read_log
from concord.chaos.clients import Recorder, classify, run_client
from concord.chaos.nemeses import Nemeses
from concord.chaos.recipes import (
    COUNTER_KEY,
    Counter,
    LockerProc,
    check_counter,
    check_lock,
    read_holds,
)
from concord.chaos.procs import (
    BASE_SETTINGS,
    MemberPorts,
    NodeProc,
    free_ports,
    merged,
    render_config,
    signal_pids,
)
from concord.chaos.report import ALL_FAULTS, GAP_THRESHOLD_S, ChaosOptions, ChaosReport
from concord.auth.tokens import new_token
from concord.client import Client
from concord.client.raw import request
from concord.errors import ConcordError
from concord.sim.linearizability import Operation, OpKind, Outcome, check_history

__all__ = ["ALL_FAULTS", "ChaosOptions", "ChaosReport", "ChaosRun", "run_chaos"]

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_MS = 1000

Context = zmq.Context[zmq.Socket[bytes]]


class ChaosRun:
    """A cluster, its clients and nemeses, and the final checks. Use `run_chaos`."""

    def __init__(self, options: ChaosOptions, stop: threading.Event | None = None) -> None:
        self.o = options
        self.stop = stop if stop is not None else threading.Event()
        self.ids = [f"n{i + 1}" for i in range(options.nodes)]
        self.own_dir = options.workdir is None
        self.dir = (Path(tempfile.mkdtemp(prefix="concord-chaos-")) if options.workdir is None
                    else options.workdir)
        self.settings = merged(BASE_SETTINGS, {
            "faults": {"enabled": True, "unsafe_leader_reads": options.unsafe_leader_reads},
            "logging": {"level": "WARNING"},
            "storage": {"snapshot_entries": 100_000},
        })
        #: sent with every request of the run (--auth): the nodes' bootstrap admin token
        self.token: str | None = None
        if options.auth:
            self.token = self._write_bootstrap_token()
        self.nodes: dict[str, NodeProc] = {}
        self.members: list[MemberPorts] = []
        self.lock = threading.Lock()
        # NB: held while a nemesis starts a node and while the run ends, so that a node
        # started by a nemesis thread still running is never missed by stop_cluster.
        self._launch_gate = threading.Lock()
        self.disturbed: set[str] = set()
        self.paused: dict[str, list[int]] = {}
        self.old_logs: list[tuple[str, Path]] = []
        self.removed: set[str] = set()
        self.down: set[str] = set()
        self.leaders_by_term: dict[int, set[str]] = collections.defaultdict(set)
        self.leader: str | None = None
        self.leader_changes = 0
        self.rec = Recorder(time.monotonic())
        self.errors: list[str] = []
        self.max_disturbed = (options.nodes - 1) // 2
        self.lockers: list[LockerProc] = []
        self.counter = Counter(self.token)
        self.nemeses = Nemeses(self)

    def _write_bootstrap_token(self) -> str:
        """A new admin token in <dir>/admin.token (0600), the nodes' bootstrap_token_file."""
        token, _ = new_token()
        path = self.dir / "admin.token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token + "\n")
        self.settings = merged(self.settings, {
            "auth": {"enabled": True, "bootstrap_token_file": str(path)}})
        return token

    # -- processes ---------------------------------------------------------------------

    def start_cluster(self, attempts: int = 3) -> None:
        for attempt in range(attempts):
            ports = free_ports(3 * len(self.ids))
            self.members = [MemberPorts(nid, *ports[3 * i:3 * i + 3]) for i, nid in enumerate(self.ids)]
            for nid in self.ids:
                node = self.nodes.get(nid) or NodeProc(nid, self.dir / f"{nid}.toml",
                                                       self.dir / "data" / nid, self.dir / f"{nid}.log")
                self.nodes[nid] = node
                node.config_path.write_text(render_config(nid, node.data_dir, self.members,
                                                          self.settings, read_workers=1))
            try:
                for node in self.nodes.values():
                    node.launch()
                for node in self.nodes.values():
                    node.wait_ready()
                return
            except Exception:
                self.stop_cluster()
                if attempt == attempts - 1:
                    raise

    def launch(self, node: NodeProc) -> bool:
        """Start `node` for a nemesis, unless the run is ending (then False, nothing started)."""
        with self._launch_gate:
            if self.stop.is_set():
                return False
            node.launch()
            return True

    def stop_cluster(self) -> None:
        """SIGCONT anything paused, SIGTERM every node, wait, SIGKILL what is left (by pid)."""
        with self._launch_gate:
            pass  # a nemesis's launch under way is done; once `stop` is set none follows
        for pids in list(self.paused.values()):
            signal_pids(pids, signal.SIGCONT)
        self.paused.clear()
        for node in self.nodes.values():
            node.remember_children()
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            try:
                node.terminate(timeout_s=10.0)
            except Exception as exc:  # noqa: BLE001 - keep ending the others
                logger.warning("terminate failed node=%s error=%s", node.id, exc)
            node.kill_tree()

    def leftovers(self) -> tuple[list[int], list[str]]:
        for node in self.nodes.values():  # what SIGKILLed supervisors left: ours to remove
            node.remove_killed_leftovers()
        pids = [p for n in self.nodes.values() for p in n.alive_pids()]
        segs = [s for n in self.nodes.values() for s in n.shm_segments()]
        return pids, segs

    def endpoint(self, nid: str) -> str | None:
        node = self.nodes.get(nid)
        return node.endpoints.get("client") if node is not None else None

    def running(self) -> list[str]:
        return [nid for nid, n in self.nodes.items() if n.running and nid not in self.paused]

    def claim(self, rng: random.Random, candidates: Iterable[str]) -> str | None:
        with self.lock:
            if len(self.disturbed) >= self.max_disturbed:
                return None
            free = sorted(set(candidates) - self.disturbed)
            if not free:
                return None
            victim = rng.choice(free)
            self.disturbed.add(victim)
            return victim

    def release(self, nid: str) -> None:
        with self.lock:
            self.disturbed.discard(nid)

    # -- talking to nodes --------------------------------------------------------------

    def call(self, nid: str, msg: Mapping[str, object], ctx: Context,
             timeout_ms: int = REQUEST_TIMEOUT_MS) -> dict[str, object] | None:
        """One attempt; None when there is no answer (outcome unknown)."""
        ep = self.endpoint(nid)
        if ep is None:
            return None
        if self.token is not None:
            msg = {**msg, "token": self.token}
        try:
            return request(ep, msg, timeout_ms=timeout_ms, retries=0, ctx=ctx)
        except ConcordError:
            return None

    def node_of(self, endpoint: object) -> str | None:
        for nid, node in self.nodes.items():
            if node.endpoints.get("client") == endpoint:
                return nid
        return None

    def admin(self, msg: Mapping[str, object], ctx: Context) -> dict[str, object] | None:
        """Send an admin op to the leader (following one not_leader hint)."""
        target = self.leader or (self.running() or self.ids)[0]
        for _ in range(3):
            reply = self.call(target, msg, ctx, timeout_ms=3000)
            if reply is None or reply.get("ok") or reply.get("error") != "not_leader":
                return reply
            hinted = self.node_of(reply.get("leader"))
            if hinted is None:
                return reply
            target = hinted
        return None

    # -- the actors --------------------------------------------------------------------

    # -- the actors --------------------------------------------------------------------

    def log(self, line: str) -> None:
        logger.info("%s", line)

    def poller(self) -> None:
        ctx: Context = zmq.Context()
        try:
            while not self.stop.wait(0.25):
                self.poll_once(ctx)
        finally:
            ctx.destroy(linger=0)

    def poll_once(self, ctx: Context) -> None:
        best: tuple[int, str] | None = None
        for nid in self.running():
            st = self.call(nid, {"op": "status"}, ctx, timeout_ms=300)
            if st is None or not st.get("ok"):
                continue
            term = st.get("term")
            if st.get("role") == "leader" and isinstance(term, int):
                with self.lock:
                    self.leaders_by_term[term].add(nid)
                if best is None or term > best[0]:
                    best = (term, nid)
        if best is not None and best[1] != self.leader:
            if self.leader is not None:
                self.leader_changes += 1
            self.leader = best[1]
            self.log(f"leader: {best[1]} term={best[0]}")

    def nemesis(self, name: str, action: Callable[[random.Random, Context], None],
                every: tuple[float, float]) -> None:
        rng = random.Random(f"{self.o.seed}:nemesis:{name}")
        ctx: Context = zmq.Context()
        try:
            while not self.stop.wait(rng.uniform(*every)):
                try:
                    action(rng, ctx)
                except Exception as exc:  # noqa: BLE001 - a nemesis error is reported, not fatal
                    logger.warning("%s: error %s: %s", name, type(exc).__name__, exc)
                    self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            ctx.destroy(linger=0)
    # -- the run ---------------------------------------------------------------------

    def threads(self) -> list[threading.Thread]:
        out = [threading.Thread(target=run_client, args=(self, c, True), name=f"writer{c}")
               for c in range(self.o.writers)]
        out += [threading.Thread(target=run_client, args=(self, self.o.writers + c, False),
                                 name=f"reader{c}") for c in range(self.o.readers)]
        out.append(threading.Thread(target=self.poller, name="poller"))
        endpoints = [n.client for n in self.nodes.values()]
        out += [threading.Thread(target=self.counter.run, name=f"incrementer{c}",
                                 args=(endpoints[c % len(endpoints):] + endpoints[:c % len(endpoints)],
                                       self.stop)) for c in range(self.o.incrementers)]
        f = self.o.faults
        plan: list[tuple[str, Callable[[random.Random, Context], None], tuple[float, float]]] = []
        if "preempt" in f and self.o.nodes >= 2:
            plan.append(("preempt", self.nemeses.preempt, (3.0, 7.0)))
        if "membership" in f and self.o.nodes >= 3:
            plan.append(("membership", self.nemeses.membership, (5.0, 10.0)))
        if {"drop", "delay", "partition"} & set(f) and self.o.nodes >= 2:
            plan.append(("links", self.nemeses.link_fault, (1.0, 3.0)))
        if "kill" in f and self.o.nodes >= 3:
            plan.append(("kill", self.nemeses.kill, (4.0, 9.0)))
        if "pause" in f and self.o.nodes >= 3:
            plan.append(("pause", self.nemeses.pause, (3.0, 7.0)))
        if "holders" in f and self.lockers:
            plan.append(("holders", self.nemeses.kill_holder, (1.0, 4.0)))
        out += [threading.Thread(target=self.nemesis, args=p, name=p[0]) for p in plan]
        return out

    def start_lockers(self) -> None:
        endpoints = [n.client for n in self.nodes.values()]
        for i in range(self.o.lockers):
            locker = LockerProc(f"locker{i}", self.dir / f"locker{i}.log", endpoints,
                                self.o.seed * 100 + i, unsafe=self.o.unsafe_lock,
                                token=self.token)
            locker.start()
            self.lockers.append(locker)

    def stop_lockers(self) -> None:
        for locker in self.lockers:
            locker.stop()

    def final_counter(self) -> object:
        """The counter, read with strong consistency (None: absent or unreadable)."""
        endpoints = [n.client for n in self.nodes.values()]
        try:
            with Client(endpoints, shm=False, timeout_s=20.0, token=self.token) as client:
                return client.get(COUNTER_KEY, consistency="strong", default=None)
        except ConcordError as exc:
            self.errors.append(f"cannot read the counter: {exc}")
            return None

    def final_reads(self, keys: Iterable[str]) -> None:
        """Heal, then read every key once with strong consistency (recorded)."""
        ctx: Context = zmq.Context()
        try:
            self.nemeses.heal(ctx)
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline:
                self.poll_once(ctx)
                if self.leader is not None:
                    break
                time.sleep(0.2)
            for key in sorted(keys):
                for _ in range(10):
                    if self.leader is None:
                        break
                    t_inv = self.rec.now()
                    reply = self.call(self.leader, {"op": "get", "key": key, "consistency": "strong"},
                                      ctx, timeout_ms=2000)
                    outcome, result, _ = classify("get", reply)
                    if outcome is Outcome.OK:
                        self.rec.op("final_get", "ok", Operation(
                            -1, OpKind.GET, key, (), t_inv, self.rec.now(), outcome, result))
                        break
                    self.rec.op("final_get", "fail")
                    self.poll_once(ctx)
        finally:
            ctx.destroy(linger=0)

    def read_logs(self) -> list[NodeLog]:
        logs = []
        dirs = [(nid, n.data_dir) for nid, n in self.nodes.items()] + self.old_logs
        for name, d in dirs:
            if not d.exists():
                continue
            try:
                logs.append(read_log(name, d))
            except ConcordError as exc:
                self.errors.append(f"cannot read the log of {name}: {exc}")
        return logs


def run_chaos(options: ChaosOptions, stop: threading.Event | None = None) -> ChaosReport:
    """
    Run chaos for `options.duration_s` (or until `stop` is set) and check what happened.

    Every process started is ended by pid before this returns, also on exceptions.
    """
    run = ChaosRun(options, stop)
    report = ChaosReport(options)
    started = time.monotonic()
    threads: list[threading.Thread] = []
    try:
        run.start_cluster()
        run.log(f"cluster: success nodes={run.ids} dir={run.dir}")
        run.rec.t0 = time.monotonic()
        run.start_lockers()
        threads = run.threads()
        for t in threads:
            t.start()
        report.interrupted = run.stop.wait(options.duration_s)
        run.stop.set()
        for t in threads:
            t.join(timeout=60.0)
        run.stop_lockers()
        if not report.interrupted:
            run.final_reads({op.key for op in run.rec.history})
            if options.incrementers:
                report.counter = check_counter(run.counter, run.final_counter())
    except Exception as exc:  # noqa: BLE001 - reported, then everything is cleaned up
        logger.exception("chaos run failed")
        run.errors.append(f"run failed: {type(exc).__name__}: {exc}")
    finally:
        run.stop.set()
        for t in threads:
            t.join(timeout=60.0)
        run.stop_lockers()
        run.stop_cluster()
        report.leftover_pids, report.leftover_segments = run.leftovers()
    report.elapsed_s = time.monotonic() - started
    rec = run.rec
    report.ops = rec.ops
    report.faults = rec.faults
    report.leader_changes = run.leader_changes
    times = sorted(rec.write_ok_times)
    edges = [0.0, *times, min(report.elapsed_s, options.duration_s)] if times else []
    report.gaps = [(a, b) for a, b in zip(edges, edges[1:]) if b - a > GAP_THRESHOLD_S]
    logs = run.read_logs()
    if logs:
        report.logs = check_logs(logs)
        report.acked = check_acked(rec.acked, logs)
    report.leaders = check_leaders(run.leaders_by_term)
    if run.lockers:
        report.lock = check_lock(read_holds({lk.name: lk.lines() for lk in run.lockers}))
    report.linearizability = check_history(rec.history, max_steps_per_key=500_000,
                                           time_budget_s_per_key=10.0)
    report.errors = run.errors
    if report.leftover_pids or report.leftover_segments:
        report.errors.append("processes or shared-memory segments left behind")
    if run.own_dir and report.ok and not options.keep:
        shutil.rmtree(run.dir, ignore_errors=True)
    else:
        report.workdir = run.dir
    return report
