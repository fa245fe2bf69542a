"""
What a chaos run is asked to do (`ChaosOptions`) and what it reports (`ChaosReport`).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

from concord.chaos.checks import SafetyResult
from concord.sim.linearizability import CheckResult, Verdict

__all__ = ["ALL_FAULTS", "GAP_THRESHOLD_S", "ChaosOptions", "ChaosReport"]

#: Every nemesis kind (`--faults` takes a subset).
ALL_FAULTS = ("preempt", "membership", "drop", "delay", "partition", "kill", "pause", "holders")
#: A stretch without an acknowledged write longer than this is an availability gap.
GAP_THRESHOLD_S = 1.0


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
    #: [auth] enabled, with a bootstrap admin token the run writes and sends everywhere
    auth: bool = False

    def replay_command(self) -> str:
        parts = ["python -m concord.chaos", f"--nodes {self.nodes}",
                 f"--duration {self.duration_s:g}", f"--seed {self.seed}"]
        if tuple(self.faults) != ALL_FAULTS:
            parts.append(f"--faults {','.join(self.faults)}")
        if self.unsafe_leader_reads:
            parts.append("--unsafe-leader-reads")
        if self.unsafe_lock:
            parts.append("--unsafe-lock")
        if self.auth:
            parts.append("--auth")
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
        lines += self._render_checks()
        for v in self.violations:
            lines.append("VIOLATION " + v.replace("\n", "\n    "))
        for e in self.errors:
            lines.append("ERROR " + e)
        if self.leftover_pids or self.leftover_segments:
            lines.append(f"leftovers: pids={self.leftover_pids} segments={self.leftover_segments}")
        if self.workdir is not None:
            lines.append(f"data dirs and node logs kept in {self.workdir}")
        lin = self.linearizability
        verdict = "PASS" if self.ok else "FAIL"
        if self.ok and lin is not None and lin.unknown_keys:
            verdict = f"PASS except {len(lin.unknown_keys)} key(s) whose verdict is unknown"
        lines.append(f"verdict: {verdict} seed={o.seed}")
        if not self.ok:
            lines.append(f"replay: {o.replay_command()}")
        return "\n".join(lines)

    def _render_checks(self) -> list[str]:
        lines = ["checks:"]
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
        return lines

