"""
The nemeses of a chaos run: each injects one kind of fault into the cluster of a
`concord.chaos.run.ChaosRun` and records it.

- preempt: transfer_leader to a random voter;
- membership: remove a voter, restart it empty with --join, add it back as a learner,
  promote it;
- link faults: drop / delay / partition through the `fault` admin op, then heal;
- kill: SIGKILL a node's process tree, restart it;
- pause: SIGSTOP a node's tree (or its raft worker alone), SIGCONT it.

A nemesis claims its victim from the run (`ChaosRun._claim`), so at most (n - 1) // 2
nodes are disturbed at any moment. Each draws from its own random stream.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import psutil  # type: ignore[import-untyped, unused-ignore]
import zmq

from concord.chaos.procs import signal_pids

if TYPE_CHECKING:
    import random

    from concord.chaos.run import ChaosRun

__all__ = ["Nemeses"]

Context = zmq.Context[zmq.Socket[bytes]]


class Nemeses:
    """The fault injectors of one run (they act on `run`'s nodes and record into it)."""

    def __init__(self, run: ChaosRun) -> None:
        self.run = run

    def preempt(self, rng: random.Random, ctx: Context) -> None:
        if self.run.leader is None:
            return
        st = self.run.call(self.run.leader, {"op": "members"}, ctx)
        members = st.get("members") if st is not None else None
        voters = [str(m["id"]) for m in members if isinstance(m, dict) and m.get("role") == "voter"
                  and m.get("id") != self.run.leader] if isinstance(members, list) else []
        if not voters:
            return
        to = rng.choice(sorted(voters))
        t = time.monotonic()
        reply = self.run.admin({"op": "transfer_leader", "member_id": to}, ctx)
        self.run.rec.fault("preempt")
        ok = reply is not None and reply.get("ok")
        self.run.log(f"preempt: {'success' if ok else 'fail'} leader={to}"
                  f"{'' if ok else ' error=' + str(reply.get('error') if reply else 'no reply')}"
                  f" latency_ms={(time.monotonic() - t) * 1000:.0f}")

    def _reconfigure(self, ctx: Context, msg: Mapping[str, object], what: str) -> bool:
        t = time.monotonic()
        reply = self.run.admin(msg, ctx)
        ok = reply is not None and bool(reply.get("ok"))
        members = reply.get("members") if reply is not None else None
        shown = ([f"{m.get('id')}{'' if m.get('role') == 'voter' else '(learner)'}"
                  for m in members if isinstance(m, dict)] if isinstance(members, list) else [])
        err = ("" if ok else f" error={reply.get('error')} message={reply.get('message')!r}"
               if reply else " error=no reply")
        self.run.log(f"reconfigure: {'success' if ok else 'fail'} {what}{err} new_members={shown}"
                  f" latency_ms={(time.monotonic() - t) * 1000:.0f}")
        self.run.rec.op("reconfigure", "ok" if ok else "fail")
        return ok

    def membership(self, rng: random.Random, ctx: Context) -> None:
        """Remove a voter, restart it empty with --join, add it back as a learner, promote it.

        A removed node stays claimed (disturbed) until it is a voter again: a step that
        failed is retried on the next turn, so voters never drop below a majority of the
        original size.
        """
        with self.run.lock:
            pending = sorted(self.run.removed)
        if pending:
            self._readd(rng, ctx, pending[0])
            return
        victim = self.run.claim(rng, self.run.running())
        if victim is None:
            return
        self.run.rec.fault("membership")
        if not self._reconfigure(ctx, {"op": "remove_member", "member_id": victim},
                                 f"removed={victim}"):
            role = self._role(ctx, victim)  # no reply: the removal may have happened
            if role == "voter":
                self.run.release(victim)
                return
            if role is not None:  # unknown: stays claimed; the next turn looks again
                with self.run.lock:
                    self.run.removed.add(victim)
                return
            self.run.log(f"reconfigure: success removed={victim} (seen in the members list)")
        with self.run.lock:
            self.run.removed.add(victim)
        node = self.run.nodes[victim]
        node.terminate(timeout_s=10.0)
        old = node.data_dir.with_name(f"{victim}.gen{len(self.run.old_logs) + 1}")
        if node.data_dir.exists():
            node.data_dir.rename(old)
            self.run.old_logs.append((old.name, old))
        node.extra_args = ("--join",)
        if not self.run.stop.wait(rng.uniform(0.2, 1.0)):
            self._readd(rng, ctx, victim)

    def _role(self, ctx: Context, nid: str) -> str | None:
        reply = self.run.admin({"op": "members"}, ctx)
        members = reply.get("members") if reply is not None else None
        if not isinstance(members, list):
            return "unknown"
        role = next((m.get("role") for m in members if isinstance(m, dict) and m.get("id") == nid),
                    None)
        return str(role) if role is not None else None

    def _readd(self, rng: random.Random, ctx: Context, victim: str) -> None:
        node = self.run.nodes[victim]
        if not node.running:
            if not self.run.launch(node):
                return  # the run is ending
            node.wait_ready()
        role = self._role(ctx, victim)
        if role is None:
            ports = next(m for m in self.run.members if m.id == victim)
            if not self._reconfigure(ctx, {"op": "add_member", "member_id": victim,
                                           "host": "127.0.0.1", "client_port": ports.client_port,
                                           "peer_port": ports.peer_port,
                                           "events_port": ports.events_port, "learner": True},
                                     f"added={victim} as=learner"):
                return
            if self.run.stop.wait(rng.uniform(0.2, 1.5)):
                return
            role = self._role(ctx, victim)
        if role == "learner":
            if not self._reconfigure(ctx, {"op": "promote_member", "member_id": victim},
                                     f"promoted={victim}"):
                return
        elif role == "voter":
            # The leader promotes a caught-up learner by itself (docs/formats/node.md).
            self.run.log(f"reconfigure: success promoted={victim} by=leader (automatic)")
            self.run.rec.op("reconfigure", "ok")
        else:
            return
        with self.run.lock:
            self.run.removed.discard(victim)
        self.run.release(victim)

    def link_fault(self, rng: random.Random, ctx: Context) -> None:
        kinds = [k for k in ("drop", "delay", "partition") if k in self.run.o.faults]
        kind = rng.choice(kinds)
        ids = sorted(self.run.ids)
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
        sent = [nid for nid in self.run.running()
                if (r := self.run.call(nid, {"op": "fault", "command": command}, ctx)) is not None
                and r.get("ok")]
        self.run.rec.fault(kind)
        self.run.log(f"{kind}: {'success' if sent else 'fail'} {shown} nodes={sent} hold_ms={hold * 1000:.0f}")
        self.run.stop.wait(hold)
        self.heal(ctx)

    def heal(self, ctx: Context) -> None:
        healed = [nid for nid in self.run.running()
                  if (r := self.run.call(nid, {"op": "fault", "command": {"cmd": "heal"}}, ctx))
                  is not None and r.get("ok")]
        self.run.log(f"heal: success nodes={healed}")

    def kill(self, rng: random.Random, ctx: Context) -> None:
        with self.run.lock:
            down = sorted(self.run.down)
        if down:  # a restart that failed last time: the node stays claimed until it runs
            self._restart(down[0])
            return
        victim = self.run.claim(rng, self.run.running())
        if victim is None:
            return
        with self.run.lock:
            self.run.down.add(victim)
        self.run.nodes[victim].kill_tree()
        self.run.rec.fault("kill")
        self.run.log(f"kill: success node={victim} signal=SIGKILL")
        if not self.run.stop.wait(rng.uniform(0.5, 3.0)):
            self._restart(victim)

    def _restart(self, victim: str) -> None:
        node = self.run.nodes[victim]
        t = time.monotonic()
        if node.proc is not None:
            node.kill_tree()
        if not self.run.launch(node):
            return  # the run is ending
        node.wait_ready()
        self.run.log(f"restart: success node={victim} latency_ms={(time.monotonic() - t) * 1000:.0f}")
        with self.run.lock:
            self.run.down.discard(victim)
        self.run.release(victim)

    def kill_holder(self, rng: random.Random, ctx: Context) -> None:
        """SIGKILL a lock-holder process (concord.chaos.locker), restart it a little later."""
        run = self.run
        victim = rng.choice(run.lockers)
        victim.kill()
        run.rec.fault("holders")
        run.log(f"holders: success process={victim.name} signal=SIGKILL")
        if not run.stop.wait(rng.uniform(0.2, 2.0)):
            victim.start()

    def pause(self, rng: random.Random, ctx: Context) -> None:
        victim = self.run.claim(rng, self.run.running())
        if victim is None:
            return
        try:
            node = self.run.nodes[victim]
            if node.proc is None:
                return
            try:
                root = psutil.Process(node.proc.pid)
                pids = [root.pid] + [c.pid for c in root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            scope = rng.choice(["node", "raft"])
            if scope == "raft":  # the raft worker alone: read workers keep serving meanwhile
                st = self.run.call(victim, {"op": "status"}, ctx, timeout_ms=500)
                raft_pid = st.get("pid") if st is not None else None
                if not isinstance(raft_pid, int) or raft_pid not in pids:
                    return
                pids = [raft_pid]
            hold = rng.uniform(0.3, 2.0)
            with self.run.lock:
                self.run.paused[victim] = pids
            signal_pids(pids, signal.SIGSTOP)
            self.run.rec.fault("pause")
            self.run.log(f"pause: success node={victim} process={scope} signal=SIGSTOP "
                      f"hold_ms={hold * 1000:.0f}")
            self.run.stop.wait(hold)
            with self.run.lock:
                self.run.paused.pop(victim, None)
            signal_pids(pids, signal.SIGCONT)
            self.run.log(f"resume: success node={victim} signal=SIGCONT")
        finally:
            self.run.release(victim)

