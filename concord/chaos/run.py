"""
One chaos run against a local cluster of real node processes.

Threads, each on its own rhythm and its own random stream forked from one seed:
- clients: writers (put, put_if, delete, delete_if) and readers (get at eventual,
  leader and strong consistency) on a few keys; every invocation and completion is
  recorded (time.monotonic in this process) as a concord.sim.linearizability.Operation;
- status poller: who leads which term (leader changes, one leader per term);
- nemeses: preempt (transfer_leader to a random voter), membership (remove a voter,
  restart it empty with --join, add it back as a learner, promote it), link faults
  (drop / delay / partition through the `fault` admin op), kill (SIGKILL the node's
  process tree, restart it), pause (SIGSTOP the tree, SIGCONT it), holders (SIGKILL a
  lock-holder process, restart it);
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
import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]
import zmq

from concord.chaos.checks import (
    AckedWrite,
    NodeLog,
    SafetyResult,
    check_acked,
    check_leaders,
    check_logs,
    read_log,
)
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
    DEV_SHM,
    MemberPorts,
    NodeProc,
    free_ports,
    merged,
    render_config,
)
from concord.client import Client
from concord.errors import ConcordError
from concord.net.client import request
from concord.sim.linearizability import (
    ABSENT,
    CheckResult,
    Operation,
    OpKind,
    Outcome,
    Verdict,
    check_history,
)

__all__ = ["ALL_FAULTS", "ChaosOptions", "ChaosReport", "ChaosRun", "run_chaos"]

logger = logging.getLogger(__name__)

#: Every nemesis kind (`--faults` takes a subset).
ALL_FAULTS = ("preempt", "membership", "drop", "delay", "partition", "kill", "pause", "holders")
KEYS_PER_GENERATION = 3
OPS_PER_GENERATION = 240  # then the clients move to fresh keys: bounded history per key
REQUEST_TIMEOUT_MS = 1000
GAP_THRESHOLD_S = 1.0

Context = zmq.Context[zmq.Socket[bytes]]


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    """What one run does."""

    nodes: int = 5
    duration_s: float = 60.0
    seed: int = 0
    faults: tuple[str, ...] = ALL_FAULTS
    writers: int = 2
    readers: int = 2
    unsafe_leader_reads: bool = False
    workdir: Path | None = None
    keep: bool = False
    lockers: int = 2
    incrementers: int = 2
    unsafe_lock: bool = False

    def replay_command(self) -> str:
        parts = ["python -m concord.chaos", f"--nodes {self.nodes}",
                 f"--duration {self.duration_s:g}", f"--seed {self.seed}"]
        if tuple(self.faults) != ALL_FAULTS:
            parts.append(f"--faults {','.join(self.faults)}")
        if self.unsafe_leader_reads:
            parts.append("--unsafe-leader-reads")
        if self.unsafe_lock:
            parts.append("--unsafe-lock")
        if (self.lockers, self.incrementers) != (2, 2):
            parts.append(f"--lockers {self.lockers} --incrementers {self.incrementers}")
        return " ".join(parts)


@dataclass
class ChaosReport:
    """What a run saw and the verdict of its checks."""

    options: ChaosOptions
    elapsed_s: float = 0.0
    interrupted: bool = False
    ops: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    leader_changes: int = 0
    gaps: list[tuple[float, float]] = field(default_factory=list)
    linearizability: CheckResult | None = None
    logs: SafetyResult | None = None
    acked: SafetyResult | None = None
    leaders: SafetyResult | None = None
    lock: SafetyResult | None = None
    counter: SafetyResult | None = None
    errors: list[str] = field(default_factory=list)
    leftover_pids: list[int] = field(default_factory=list)
    leftover_segments: list[str] = field(default_factory=list)
    workdir: Path | None = None

    @property
    def violations(self) -> list[str]:
        out: list[str] = []
        if self.linearizability is not None:
            out += [f"linearizability: {v.describe()}" for v in self.linearizability.violations]
        for name, result in (("raft log", self.logs), ("acknowledged writes", self.acked),
                             ("leaders", self.leaders), ("lock", self.lock),
                             ("counter", self.counter)):
            if result is not None:
                out += [f"{name}: {v}" for v in result.violations]
        return out

    @property
    def ok(self) -> bool:
        return not self.violations and not self.errors

    def render(self) -> str:
        """The report printed at the end of a run."""
        o = self.options
        lines = [f"chaos report: seed={o.seed} nodes={o.nodes} duration_s={o.duration_s:g} "
                 f"elapsed_s={self.elapsed_s:.1f}"
                 + (" (interrupted)" if self.interrupted else "")
                 + (" unsafe_leader_reads=on" if o.unsafe_leader_reads else "")]
        lines.append("operations (kind: ok / fail / unknown):")
        for kind in sorted({k for k, _ in self.ops}):
            lines.append(f"  {kind:<14} {self.ops[(kind, 'ok')]:>6} / {self.ops[(kind, 'fail')]:>5}"
                         f" / {self.ops[(kind, 'unknown')]:>5}")
        lines.append(f"leader changes: {self.leader_changes}")
        lines.append("faults injected: " + (", ".join(f"{k}={v}" for k, v in sorted(self.faults.items()))
                                           or "none"))
        longest = sorted(self.gaps, key=lambda g: g[1] - g[0], reverse=True)[:5]
        lines.append(f"availability gaps (no write acknowledged for > {GAP_THRESHOLD_S:g} s): "
                     f"{len(self.gaps)}, total {sum(b - a for a, b in self.gaps):.1f} s"
                     + ("; longest " + ", ".join(f"{b - a:.1f} s at t={a:.1f}" for a, b in longest)
                        if longest else ""))
        lines.append("checks:")
        lin = self.linearizability
        if lin is None:
            lines.append("  linearizability: not run")
        else:
            n_ok = sum(1 for v in lin.keys.values() if v.verdict is Verdict.OK)
            ops = sum(v.ops_checked for v in lin.keys.values())
            verdict = ("VIOLATION" if lin.violations else "unknown" if lin.unknown_keys else "ok")
            lines.append(f"  linearizability: {verdict} (keys={len(lin.keys)} ok={n_ok} "
                         f"violations={len(lin.violations)} unknown={len(lin.unknown_keys)} "
                         f"ops_checked={ops})")
            if lin.unknown_keys:
                lines.append(f"    unknown (search budget exhausted): {lin.unknown_keys}")
        for name, result, what in (("raft log safety", self.logs, "indexes"),
                                   ("acknowledged writes", self.acked, "writes"),
                                   ("one leader per term", self.leaders, "terms"),
                                   ("lock: one holder at a time", self.lock, "holds"),
                                   ("counter = acknowledged increments", self.counter,
                                    "increments")):
            if result is None:
                lines.append(f"  {name}: not run")
                continue
            extra = f", {result.unverifiable} only in snapshots" if result.unverifiable else ""
            lines.append(f"  {name}: {'ok' if result.ok else 'VIOLATION'} "
                         f"({result.checked} {what} checked{extra})")
        for v in self.violations:
            lines.append("VIOLATION " + v.replace("\n", "\n    "))
        for e in self.errors:
            lines.append("ERROR " + e)
        if self.leftover_pids or self.leftover_segments:
            lines.append(f"leftovers: pids={self.leftover_pids} segments={self.leftover_segments}")
        if self.workdir is not None:
            lines.append(f"data dirs and node logs kept in {self.workdir}")
        verdict = "PASS" if self.ok else "FAIL"
        if self.ok and lin is not None and lin.unknown_keys:
            verdict = f"PASS except {len(lin.unknown_keys)} key(s) whose verdict is unknown"
        lines.append(f"verdict: {verdict} seed={o.seed}")
        if not self.ok:
            lines.append(f"replay: {o.replay_command()}")
        return "\n".join(lines)


class _Recorder:
    """The shared, locked record of the run (history, counters, acknowledged writes)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.lock = threading.Lock()
        self.history: list[Operation] = []
        self.ops: collections.Counter[tuple[str, str]] = collections.Counter()
        self.faults: collections.Counter[str] = collections.Counter()
        self.acked: list[AckedWrite] = []
        self.write_ok_times: list[float] = []
        self.count = 0

    def now(self) -> float:
        return (time.monotonic() - self.t0) * 1000.0

    def next_index(self) -> int:
        with self.lock:
            self.count += 1
            return self.count

    def op(self, kind: str, outcome: str, op: Operation | None = None,
           acked: AckedWrite | None = None) -> None:
        with self.lock:
            self.ops[(kind, outcome)] += 1
            if op is not None:
                self.history.append(op)
            if acked is not None:
                self.acked.append(acked)
                self.write_ok_times.append(time.monotonic() - self.t0)

    def fault(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] += 1


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
        self.nodes: dict[str, NodeProc] = {}
        self.members: list[MemberPorts] = []
        self.lock = threading.Lock()
        self.disturbed: set[str] = set()
        self.paused: dict[str, list[int]] = {}
        self.old_logs: list[tuple[str, Path]] = []
        self.removed: set[str] = set()
        self.down: set[str] = set()
        self.leaders_by_term: dict[int, set[str]] = collections.defaultdict(set)
        self.leader: str | None = None
        self.leader_changes = 0
        self.rec = _Recorder(time.monotonic())
        self.errors: list[str] = []
        self.max_disturbed = (options.nodes - 1) // 2
        self.lockers: list[LockerProc] = []
        self.counter = Counter()

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

    def stop_cluster(self) -> None:
        """SIGCONT anything paused, SIGTERM every node, wait, SIGKILL what is left (by pid)."""
        for pids in list(self.paused.values()):
            _signal_pids(pids, signal.SIGCONT)
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
        for node in self.nodes.values():  # segments of SIGKILLed supervisors: ours to remove
            for name in node.shm_segments(killed=True):
                (DEV_SHM / name).unlink(missing_ok=True)
        pids = [p for n in self.nodes.values() for p in n.alive_pids()]
        segs = [s for n in self.nodes.values() for s in n.shm_segments()]
        return pids, segs

    def endpoint(self, nid: str) -> str | None:
        node = self.nodes.get(nid)
        return node.endpoints.get("client") if node is not None else None

    def running(self) -> list[str]:
        return [nid for nid, n in self.nodes.items() if n.running and nid not in self.paused]

    def _claim(self, rng: random.Random, candidates: Iterable[str]) -> str | None:
        with self.lock:
            if len(self.disturbed) >= self.max_disturbed:
                return None
            free = sorted(set(candidates) - self.disturbed)
            if not free:
                return None
            victim = rng.choice(free)
            self.disturbed.add(victim)
            return victim

    def _release(self, nid: str) -> None:
        with self.lock:
            self.disturbed.discard(nid)

    # -- talking to nodes --------------------------------------------------------------

    def call(self, nid: str, msg: Mapping[str, object], ctx: Context,
             timeout_ms: int = REQUEST_TIMEOUT_MS) -> dict[str, object] | None:
        """One attempt; None when there is no answer (outcome unknown)."""
        ep = self.endpoint(nid)
        if ep is None:
            return None
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

    def _log(self, line: str) -> None:
        logger.info("%s", line)

    def client(self, cid: int, writer: bool) -> None:
        rng = random.Random(f"{self.o.seed}:client:{cid}")
        ctx: Context = zmq.Context()
        target = rng.choice(self.ids)
        last_seen: dict[str, Hashable] = {}
        counter = 0
        try:
            while not self.stop.is_set():
                self.stop.wait(rng.uniform(0.002, 0.03))
                if self.stop.is_set():
                    break
                i = self.rec.next_index()
                key = f"k{i // OPS_PER_GENERATION}.{rng.randrange(KEYS_PER_GENERATION)}"
                counter += 1
                value = cid * 1_000_000 + counter
                seen = last_seen.get(key, ABSENT)
                consistency = ""
                if writer:
                    kind = rng.choices(["put", "put_if", "delete", "delete_if", "get"], [5, 3, 1, 1, 2])[0]
                    if kind == "get":
                        consistency = "strong"
                else:
                    kind = "get"
                    consistency = rng.choice(["eventual", "leader", "strong"])
                    if rng.random() < 0.5:
                        target = rng.choice(self.ids)  # any node: followers answer or redirect
                msg: dict[str, object] = {"op": kind, "key": key}
                args: tuple[Hashable, ...] = ()
                if kind == "put":
                    msg["value"] = value
                    args = (value,)
                elif kind == "put_if":
                    msg["value"] = value
                    if seen is ABSENT:
                        msg["absent"] = True
                    else:
                        msg["expected"] = seen
                    args = (seen, value)
                elif kind == "delete_if":
                    if seen is ABSENT:
                        kind = "delete"
                        msg["op"] = kind
                    else:
                        msg["expected"] = seen
                        args = (seen,)
                else:
                    if consistency:
                        msg["consistency"] = consistency
                sent_to = target
                t_inv = self.rec.now()
                reply = self.call(target, msg, ctx)
                t_done = self.rec.now()
                latency = t_done - t_inv
                label = f"get[{consistency}]" if consistency else kind
                outcome, result, note = self._classify(kind, reply)
                if outcome is Outcome.OK:
                    if kind == "get":
                        last_seen[key] = result
                    elif kind == "put" or (kind == "put_if" and result is True):
                        last_seen[key] = value
                    elif kind == "delete" or (kind == "delete_if" and result is True):
                        last_seen[key] = ABSENT
                if reply is not None and reply.get("error") in ("not_leader", "no_leader"):
                    hinted = self.node_of(reply.get("leader"))
                    target = hinted if hinted is not None else rng.choice(self.ids)
                elif reply is None:
                    target = rng.choice(self.ids)
                op_kind = {"put": OpKind.PUT, "put_if": OpKind.PUT_IF, "delete": OpKind.DELETE,
                           "delete_if": OpKind.DELETE_IF, "get": OpKind.GET}[kind]
                op = None
                if consistency != "eventual":  # eventual reads may be stale by contract
                    op = Operation(cid, op_kind, key, args, t_inv,
                                   t_done if outcome is not Outcome.UNKNOWN else None, outcome,
                                   result if outcome is Outcome.OK else None)
                acked = None
                revision = reply.get("revision") if reply is not None and reply.get("ok") else None
                if kind != "get" and isinstance(revision, int) and not isinstance(revision, bool):
                    if not (kind == "delete" and result is False):
                        acked = AckedWrite(key, revision)
                word = {"ok": "success", "fail": "fail", "unknown": "unknown"}[outcome.value]
                self.rec.op(label, outcome.value, op, acked)
                self._log(f"{label}: {word}{note} i={i} key={key} node={sent_to}"
                          f" latency_ms={latency:.0f}")
        finally:
            ctx.destroy(linger=0)

    @staticmethod
    def _classify(kind: str, reply: Mapping[str, object] | None) -> tuple[Outcome, Hashable, str]:
        write = kind != "get"
        if reply is None:
            return (Outcome.UNKNOWN if write else Outcome.FAIL), None, " (no reply)"
        if reply.get("ok"):
            if kind == "get":
                value = reply.get("value")
                return Outcome.OK, _hashable(value), ""
            if kind == "delete":
                return Outcome.OK, bool(reply.get("deleted")), ""
            if kind in ("put_if", "delete_if"):
                return Outcome.OK, True, ""
            return Outcome.OK, None, ""
        error = str(reply.get("error"))
        if kind == "get" and error == "not_found":
            return Outcome.OK, ABSENT, ""
        if kind in ("put_if", "delete_if") and error == "condition_failed":
            return Outcome.OK, False, " (condition_failed)"
        if error in ("not_leader", "no_leader") or not write:
            return Outcome.FAIL, None, f" error={error}"
        if error in ("timeout", "shutting_down"):
            return Outcome.UNKNOWN, None, f" error={error}"
        return Outcome.FAIL, None, f" error={error}"

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
            self._log(f"leader: {best[1]} term={best[0]}")

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

    def preempt(self, rng: random.Random, ctx: Context) -> None:
        if self.leader is None:
            return
        st = self.call(self.leader, {"op": "members"}, ctx)
        members = st.get("members") if st is not None else None
        voters = [str(m["id"]) for m in members if isinstance(m, dict) and m.get("role") == "voter"
                  and m.get("id") != self.leader] if isinstance(members, list) else []
        if not voters:
            return
        to = rng.choice(sorted(voters))
        t = time.monotonic()
        reply = self.admin({"op": "transfer_leader", "member_id": to}, ctx)
        self.rec.fault("preempt")
        ok = reply is not None and reply.get("ok")
        self._log(f"preempt: {'success' if ok else 'fail'} leader={to}"
                  f"{'' if ok else ' error=' + str(reply.get('error') if reply else 'no reply')}"
                  f" latency_ms={(time.monotonic() - t) * 1000:.0f}")

    def _reconfigure(self, ctx: Context, msg: Mapping[str, object], what: str) -> bool:
        t = time.monotonic()
        reply = self.admin(msg, ctx)
        ok = reply is not None and bool(reply.get("ok"))
        members = reply.get("members") if reply is not None else None
        shown = ([f"{m.get('id')}{'' if m.get('role') == 'voter' else '(learner)'}"
                  for m in members if isinstance(m, dict)] if isinstance(members, list) else [])
        err = ("" if ok else f" error={reply.get('error')} message={reply.get('message')!r}"
               if reply else " error=no reply")
        self._log(f"reconfigure: {'success' if ok else 'fail'} {what}{err} new_members={shown}"
                  f" latency_ms={(time.monotonic() - t) * 1000:.0f}")
        self.rec.op("reconfigure", "ok" if ok else "fail")
        return ok

    def membership(self, rng: random.Random, ctx: Context) -> None:
        """Remove a voter, restart it empty with --join, add it back as a learner, promote it.

        A removed node stays claimed (disturbed) until it is a voter again: a step that
        failed is retried on the next turn, so voters never drop below a majority of the
        original size.
        """
        with self.lock:
            pending = sorted(self.removed)
        if pending:
            self._readd(rng, ctx, pending[0])
            return
        victim = self._claim(rng, self.running())
        if victim is None:
            return
        self.rec.fault("membership")
        if not self._reconfigure(ctx, {"op": "remove_member", "member_id": victim},
                                 f"removed={victim}"):
            role = self._role(ctx, victim)  # no reply: the removal may have happened
            if role == "voter":
                self._release(victim)
                return
            if role is not None:  # unknown: stays claimed; the next turn looks again
                with self.lock:
                    self.removed.add(victim)
                return
            self._log(f"reconfigure: success removed={victim} (seen in the members list)")
        with self.lock:
            self.removed.add(victim)
        node = self.nodes[victim]
        node.terminate(timeout_s=10.0)
        old = node.data_dir.with_name(f"{victim}.gen{len(self.old_logs) + 1}")
        if node.data_dir.exists():
            node.data_dir.rename(old)
            self.old_logs.append((old.name, old))
        node.extra_args = ("--join",)
        if not self.stop.wait(rng.uniform(0.2, 1.0)):
            self._readd(rng, ctx, victim)

    def _role(self, ctx: Context, nid: str) -> str | None:
        reply = self.admin({"op": "members"}, ctx)
        members = reply.get("members") if reply is not None else None
        if not isinstance(members, list):
            return "unknown"
        role = next((m.get("role") for m in members if isinstance(m, dict) and m.get("id") == nid),
                    None)
        return str(role) if role is not None else None

    def _readd(self, rng: random.Random, ctx: Context, victim: str) -> None:
        node = self.nodes[victim]
        if not node.running:
            node.launch()
            node.wait_ready()
        role = self._role(ctx, victim)
        if role is None:
            ports = next(m for m in self.members if m.id == victim)
            if not self._reconfigure(ctx, {"op": "add_member", "member_id": victim,
                                           "host": "127.0.0.1", "client_port": ports.client_port,
                                           "peer_port": ports.peer_port,
                                           "events_port": ports.events_port, "learner": True},
                                     f"added={victim} as=learner"):
                return
            if self.stop.wait(rng.uniform(0.2, 1.5)):
                return
            role = self._role(ctx, victim)
        if role == "learner":
            if not self._reconfigure(ctx, {"op": "promote_member", "member_id": victim},
                                     f"promoted={victim}"):
                return
        elif role == "voter":
            # The leader promotes a caught-up learner by itself (docs/formats/node.md).
            self._log(f"reconfigure: success promoted={victim} by=leader (automatic)")
            self.rec.op("reconfigure", "ok")
        else:
            return
        with self.lock:
            self.removed.discard(victim)
        self._release(victim)

    def link_fault(self, rng: random.Random, ctx: Context) -> None:
        kinds = [k for k in ("drop", "delay", "partition") if k in self.o.faults]
        kind = rng.choice(kinds)
        ids = sorted(self.ids)
        if kind == "partition":
            shuffled = ids[:]
            rng.shuffle(shuffled)
            cut = rng.randint(1, max(1, (len(ids) - 1) // 2))
            command: dict[str, object] = {"cmd": "partition", "a": sorted(shuffled[:cut]),
                                          "b": sorted(shuffled[cut:])}
            shown = f"a={command['a']} b={command['b']}"
        else:
            src, dst = rng.sample(ids, 2)
            if kind == "drop":
                p = round(rng.uniform(0.2, 0.8), 2)
                command = {"cmd": "drop", "src": src, "dst": dst, "probability": p}
                shown = f"link={src}->{dst} p={p}"
            else:
                lo = rng.randint(5, 50)
                hi = lo + rng.randint(0, 150)
                command = {"cmd": "delay", "src": src, "dst": dst, "min_ms": lo, "max_ms": hi}
                shown = f"link={src}->{dst} ms={lo}..{hi}"
        hold = rng.uniform(0.5, 3.0)
        sent = [nid for nid in self.running()
                if (r := self.call(nid, {"op": "fault", "command": command}, ctx)) is not None
                and r.get("ok")]
        self.rec.fault(kind)
        self._log(f"{kind}: {'success' if sent else 'fail'} {shown} nodes={sent} hold_ms={hold * 1000:.0f}")
        self.stop.wait(hold)
        self.heal(ctx)

    def heal(self, ctx: Context) -> None:
        healed = [nid for nid in self.running()
                  if (r := self.call(nid, {"op": "fault", "command": {"cmd": "heal"}}, ctx))
                  is not None and r.get("ok")]
        self._log(f"heal: success nodes={healed}")

    def kill(self, rng: random.Random, ctx: Context) -> None:
        with self.lock:
            down = sorted(self.down)
        if down:  # a restart that failed last time: the node stays claimed until it runs
            self._restart(down[0])
            return
        victim = self._claim(rng, self.running())
        if victim is None:
            return
        with self.lock:
            self.down.add(victim)
        self.nodes[victim].kill_tree()
        self.rec.fault("kill")
        self._log(f"kill: success node={victim} signal=SIGKILL")
        if not self.stop.wait(rng.uniform(0.5, 3.0)):
            self._restart(victim)

    def _restart(self, victim: str) -> None:
        node = self.nodes[victim]
        t = time.monotonic()
        if node.proc is not None:
            node.kill_tree()
        node.launch()
        node.wait_ready()
        self._log(f"restart: success node={victim} latency_ms={(time.monotonic() - t) * 1000:.0f}")
        with self.lock:
            self.down.discard(victim)
        self._release(victim)

    def pause(self, rng: random.Random, ctx: Context) -> None:
        victim = self._claim(rng, self.running())
        if victim is None:
            return
        try:
            node = self.nodes[victim]
            if node.proc is None:
                return
            try:
                root = psutil.Process(node.proc.pid)
                pids = [root.pid] + [c.pid for c in root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            scope = rng.choice(["node", "raft"])
            if scope == "raft":  # the raft worker alone: read workers keep serving meanwhile
                st = self.call(victim, {"op": "status"}, ctx, timeout_ms=500)
                raft_pid = st.get("pid") if st is not None else None
                if not isinstance(raft_pid, int) or raft_pid not in pids:
                    return
                pids = [raft_pid]
            hold = rng.uniform(0.3, 2.0)
            with self.lock:
                self.paused[victim] = pids
            _signal_pids(pids, signal.SIGSTOP)
            self.rec.fault("pause")
            self._log(f"pause: success node={victim} process={scope} signal=SIGSTOP "
                      f"hold_ms={hold * 1000:.0f}")
            self.stop.wait(hold)
            with self.lock:
                self.paused.pop(victim, None)
            _signal_pids(pids, signal.SIGCONT)
            self._log(f"resume: success node={victim} signal=SIGCONT")
        finally:
            self._release(victim)

    # -- the run ---------------------------------------------------------------------

    def threads(self) -> list[threading.Thread]:
        out = [threading.Thread(target=self.client, args=(c, True), name=f"writer{c}")
               for c in range(self.o.writers)]
        out += [threading.Thread(target=self.client, args=(self.o.writers + c, False),
                                 name=f"reader{c}") for c in range(self.o.readers)]
        out.append(threading.Thread(target=self.poller, name="poller"))
        endpoints = [n.client for n in self.nodes.values()]
        out += [threading.Thread(target=self.counter.run, name=f"incrementer{c}",
                                 args=(endpoints[c % len(endpoints):] + endpoints[:c % len(endpoints)],
                                       self.stop)) for c in range(self.o.incrementers)]
        f = self.o.faults
        plan: list[tuple[str, Callable[[random.Random, Context], None], tuple[float, float]]] = []
        if "preempt" in f and self.o.nodes >= 2:
            plan.append(("preempt", self.preempt, (3.0, 7.0)))
        if "membership" in f and self.o.nodes >= 3:
            plan.append(("membership", self.membership, (5.0, 10.0)))
        if {"drop", "delay", "partition"} & set(f) and self.o.nodes >= 2:
            plan.append(("links", self.link_fault, (1.0, 3.0)))
        if "kill" in f and self.o.nodes >= 3:
            plan.append(("kill", self.kill, (4.0, 9.0)))
        if "pause" in f and self.o.nodes >= 3:
            plan.append(("pause", self.pause, (3.0, 7.0)))
        if "holders" in f and self.lockers:
            plan.append(("holders", self.kill_holder, (1.0, 4.0)))
        out += [threading.Thread(target=self.nemesis, args=p, name=p[0]) for p in plan]
        return out

    def start_lockers(self) -> None:
        endpoints = [n.client for n in self.nodes.values()]
        for i in range(self.o.lockers):
            locker = LockerProc(f"locker{i}", self.dir / f"locker{i}.log", endpoints,
                                self.o.seed * 100 + i, unsafe=self.o.unsafe_lock)
            locker.start()
            self.lockers.append(locker)

    def kill_holder(self, rng: random.Random, ctx: Context) -> None:
        victim = rng.choice(self.lockers)
        victim.kill()
        self.rec.fault("holders")
        self._log(f"holders: success process={victim.name} signal=SIGKILL")
        if not self.stop.wait(rng.uniform(0.2, 2.0)):
            victim.start()

    def stop_lockers(self) -> None:
        for locker in self.lockers:
            locker.stop()

    def final_counter(self) -> object:
        """The counter, read with strong consistency (None: absent or unreadable)."""
        endpoints = [n.client for n in self.nodes.values()]
        try:
            with Client(endpoints, shm=False, timeout_s=20.0) as client:
                return client.get(COUNTER_KEY, consistency="strong", default=None)
        except ConcordError as exc:
            self.errors.append(f"cannot read the counter: {exc}")
            return None

    def final_reads(self, keys: Iterable[str]) -> None:
        """Heal, then read every key once with strong consistency (recorded)."""
        ctx: Context = zmq.Context()
        try:
            self.heal(ctx)
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
                    outcome, result, _ = self._classify("get", reply)
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


def _hashable(value: object) -> Hashable:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    return value if isinstance(value, Hashable) else repr(value)


def _signal_pids(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            psutil.Process(pid).send_signal(sig)
        except psutil.NoSuchProcess:
            pass


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
        run._log(f"cluster: success nodes={run.ids} dir={run.dir}")
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
