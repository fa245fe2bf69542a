"""
Linearizability checker for key-value histories.

Pure. No IO, no global randomness. The only clock it may read is the optional wall-clock
budget (`time_budget_s`); the deterministic simulator uses the step budget instead, so a
seed's verdict never depends on machine speed.

Used by the simulator (concord.sim), by tests, and by the chaos mode against real
processes: all three record `Operation`s and call `check_history`.

Algorithm: Wing & Gong's search over the history's call/return list, with Lowe's
memoization (a cache of `(linearized-set bitset, model state)`; Lowe, "Testing for
linearizability", 2017; the same scheme as porcupine). Keys are independent, so the
history is split into components of keys that no operation spans (a bulk operation
joins its keys) and each is checked on its own (P-compositionality, Herlihy & Wing
§3.3). The sequential model is `concord.sim.kvmodel`: values, versions, TTL expiry by
cluster time, conditional and bulk operations, leases (a lease's operations carry its
pseudo-key, and a put with a lease joins its key to it, so a lease and every key ever
attached to it form one component).

Outcomes:
- `OK`: the operation took effect exactly once, between invocation and completion, and
  its `result` is checked against the model.
- `FAIL`: the operation definitely did not take effect (rejected before it was proposed,
  e.g. not_leader); it is dropped. NB: a put_if whose condition did not hold is not a
  FAIL: it completed OK with result False.
- `UNKNOWN`: it may have taken effect at any point after its invocation, or never; its
  result is not checked. With a cluster time (`Operation.ts`: the simulator knows the
  entry that applied it) it took effect, at a point consistent with that time.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from concord.sim import kvmodel
from concord.sim.history import (
    ABSENT,
    Absent,
    Operation,
    OpKind,
    Outcome,
    Version,
    Versioned,
)

__all__ = [
    "ABSENT",
    "Absent",
    "CheckResult",
    "KeyVerdict",
    "OpKind",
    "Operation",
    "Outcome",
    "Verdict",
    "Version",
    "Versioned",
    "check_history",
    "check_key",
]


class Verdict(enum.Enum):
    OK = "ok"
    VIOLATION = "violation"
    UNKNOWN = "unknown"  # the budget ran out before the search finished


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    """
    The verdict for one key.

    `explanation` (violations only) is a small set of operations that cannot be
    linearized together; `message` says in words where the search got stuck.
    """

    key: str
    verdict: Verdict
    ops_checked: int
    steps: int
    explanation: tuple[Operation, ...] = ()
    message: str = ""

    def describe(self) -> str:
        lines = [f"key={self.key!r} verdict={self.verdict.value} ops={self.ops_checked}"]
        if self.message:
            lines.append(f"  {self.message}")
        lines.extend(f"  {op.describe()}" for op in self.explanation)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Per-key verdicts of one history."""

    keys: dict[str, KeyVerdict] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no key has a violation (keys with verdict UNKNOWN do not count)."""
        return not self.violations

    @property
    def violations(self) -> list[KeyVerdict]:
        return [v for v in self.keys.values() if v.verdict is Verdict.VIOLATION]

    @property
    def unknown_keys(self) -> list[str]:
        return [k for k, v in self.keys.items() if v.verdict is Verdict.UNKNOWN]

    def describe(self) -> str:
        bad = [v for v in self.keys.values() if v.verdict is not Verdict.OK]
        if not bad:
            return f"linearizable keys={len(self.keys)}"
        return "\n".join(v.describe() for v in bad)


# -- the model -------------------------------------------------------------------------


class _Model:
    """The sequential model of one component: its keys' slots and initial state."""

    __slots__ = ("slots", "initial")

    def __init__(self, keys: Sequence[str], initial: Sequence[Hashable]) -> None:
        self.slots = {key: i for i, key in enumerate(keys)}
        self.initial: Hashable = kvmodel.initial_state(initial)

    def step(self, state: Hashable, op: Operation) -> tuple[bool, Hashable]:
        return kvmodel.step(state, op, self.slots)  # type: ignore[arg-type]


# -- the search ------------------------------------------------------------------------


class _Budget:
    """Step and wall-clock limits shared by one key's searches."""

    def __init__(self, max_steps: int | None, time_budget_s: float | None) -> None:
        self.max_steps = max_steps
        self.deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
        self.steps = 0

    def exhausted(self) -> bool:
        if self.max_steps is not None and self.steps >= self.max_steps:
            return True
        # NB: read the clock only every 1024 steps; it costs more than a step.
        if self.deadline is not None and self.steps & 1023 == 0:
            return time.monotonic() >= self.deadline
        return False


@dataclass(slots=True)
class _Stuck:
    """Where the search got deepest before backtracking (for the explanation)."""

    depth: int = -1
    blocking: int = -1  # index of the op whose return could not be passed
    state: Hashable = None
    tail: tuple[int, ...] = ()

    def note(self, stack: Sequence[tuple[int, Hashable]], blocking: int, state: Hashable) -> None:
        """The search is deeper than ever: remember where, and the last ops it chose."""
        self.depth = len(stack)
        self.blocking = blocking
        self.state = state
        self.tail = tuple(c for c, _ in stack[-6:])


_EXPLAIN_STEPS: Final = 300_000


class _OutOfBudget(Exception):
    pass


class _Events:
    """
    The history as a doubly linked list of calls and returns, in time order (the
    Wing & Gong search, with Lowe's memo): nodes 0..n-1 are calls, n..2n-1 returns (op i's
    return is n + i; an op that may not have taken effect has none); node 2n is the head.
    `lift` takes an op's call and return out of the list, `unlift` puts them back.
    """

    __slots__ = ("n", "definite", "nxt", "prv")

    def __init__(self, ops: Sequence[Operation], definite: list[bool]) -> None:
        n = len(ops)
        events: list[tuple[float, int, int]] = []
        for i, op in enumerate(ops):
            events.append((op.invoke_time, 0, i))
            if op.outcome is Outcome.OK:
                assert op.complete_time is not None, f"ok op without completion: {op}"
                events.append((op.complete_time, 1, n + i))
            elif definite[i]:
                # It took effect, when is not known to the client: before the history ends.
                events.append((math.inf, 1, n + i))
        # Calls sort before returns at the same instant: touching intervals are concurrent.
        events.sort()
        self.n = n
        self.definite = definite
        self.nxt = nxt = [-1] * (2 * n + 1)
        self.prv = prv = [-1] * (2 * n + 1)
        last = 2 * n
        for _, _, node in events:
            nxt[last] = node
            prv[node] = last
            last = node

    def lift(self, c: int) -> None:
        nxt, prv = self.nxt, self.prv
        p, q = prv[c], nxt[c]
        nxt[p] = q
        if q != -1:
            prv[q] = p
        if self.definite[c]:
            r = self.n + c
            p, q = prv[r], nxt[r]
            nxt[p] = q
            if q != -1:
                prv[q] = p

    def unlift(self, c: int) -> None:
        nxt, prv = self.nxt, self.prv
        if self.definite[c]:
            r = self.n + c
            nxt[prv[r]] = r
            if nxt[r] != -1:
                prv[nxt[r]] = r
        nxt[prv[c]] = c
        if nxt[c] != -1:
            prv[nxt[c]] = c


def _search(
    ops: Sequence[Operation], model: _Model, budget: _Budget, stuck: _Stuck | None
) -> bool:
    """
    Return True if `ops` (one component, no FAIL ops) are linearizable from the model's
    initial state.

    Raises:
        _OutOfBudget: when `budget` runs out first.
    """
    n = len(ops)
    if n == 0:
        return True
    definite = [_took_effect(op) for op in ops]
    events = _Events(ops, definite)
    head, nxt, lift, unlift = 2 * n, events.nxt, events.lift, events.unlift
    remaining = sum(definite)
    state = model.initial
    linearized = 0
    stack: list[tuple[int, Hashable]] = []
    cache: set[tuple[int, Hashable]] = set()
    entry = nxt[head]
    while remaining > 0:
        budget.steps += 1
        if budget.exhausted():
            raise _OutOfBudget
        # Invariant: a definite op's return is still listed, so the scan meets a return
        # before the end of the list.
        assert entry != -1
        if entry < n:
            legal, new_state = model.step(state, ops[entry])
            if legal:
                grown = linearized | (1 << entry)
                memo = (grown, new_state)
                if memo not in cache:
                    cache.add(memo)
                    stack.append((entry, state))
                    state = new_state
                    linearized = grown
                    if definite[entry]:
                        remaining -= 1
                    lift(entry)
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:
            # The return of an op not yet linearized: undo the last choice.
            if stuck is not None and len(stack) > stuck.depth:
                stuck.note(stack, entry - n, state)
            if not stack:
                return False
            entry, state = stack.pop()
            linearized &= ~(1 << entry)
            if definite[entry]:
                remaining += 1
            unlift(entry)
            entry = nxt[entry]
    return True


def _took_effect(op: Operation) -> bool:
    """OK ops took effect; so did UNKNOWN ones whose cluster time is known."""
    return op.outcome is Outcome.OK or (op.outcome is Outcome.UNKNOWN and op.ts is not None)


def _written_values(op: Operation) -> tuple[Hashable, ...]:
    if op.kind is OpKind.PUT:
        return (op.args[0],)
    if op.kind is OpKind.PUT_IF:
        return (op.args[1],)
    if op.kind is OpKind.PUT_MANY:
        values = op.args[0]
        assert isinstance(values, tuple)
        return values
    return ()


def _observed_values(ops: Iterable[Operation]) -> set[Hashable]:
    """Values some OK op's outcome depends on (read, or matched by a condition)."""
    seen: set[Hashable] = set()
    for op in ops:
        if op.outcome is not Outcome.OK:
            continue
        if op.kind is OpKind.GET:
            seen.add(op.result.value if isinstance(op.result, Versioned) else op.result)
        elif op.kind is OpKind.GET_MANY:
            assert isinstance(op.result, tuple)
            seen.update(op.result)
        elif op.kind in (OpKind.PUT_IF, OpKind.DELETE_IF) and not isinstance(
            op.args[0], Version
        ):
            seen.add(op.args[0])
    return seen


def _prune_unknown(ops: Sequence[Operation]) -> list[Operation]:
    """
    Drop UNKNOWN ops whose written value no OK op observed (and UNKNOWN reads).

    A first pass only, and sound as such: if the pruned history is linearizable, so is
    the full one (the dropped ops simply never took effect). Unknown writes nobody read
    are the common case after leader loss, and each one kept can double the search.
    """
    observed = _observed_values(ops)
    kept = []
    for op in ops:
        if op.outcome is Outcome.UNKNOWN and op.ts is None:
            if op.kind in (OpKind.GET, OpKind.GET_MANY):
                continue
            written = _written_values(op)
            if written and not (set(written) & observed):
                continue
        kept.append(op)
    return kept


def _honest(ops: Sequence[Operation], initial: Sequence[Hashable]) -> bool:
    """An explanation is honest when every value it reads is written within it."""
    written = {*initial, ABSENT}
    for op in ops:
        written.update(_written_values(op))
    return _observed_values(ops) <= written


def _minimize(
    ops: list[Operation], model: _Model, initial: Sequence[Hashable], budget: _Budget
) -> list[Operation]:
    """
    Shrink a non-linearizable history to a 1-minimal one (greedy ddmin), keeping it honest.

    Stops early (returning the smallest set found) when the budget runs out.
    """
    current = ops
    chunk = max(1, len(current) // 2)
    try:
        while True:
            i = 0
            removed_any = False
            while i < len(current):
                candidate = current[:i] + current[i + chunk :]
                if (
                    candidate
                    and _honest(candidate, initial)
                    and not _search(candidate, model, budget, None)
                ):
                    current = candidate
                    removed_any = True
                else:
                    i += chunk
            if chunk > 1:
                chunk //= 2
            elif not removed_any:
                break
    except _OutOfBudget:
        pass
    return current


def check_key(
    key: str,
    ops: Sequence[Operation],
    *,
    initial: Hashable = ABSENT,
    max_steps: int | None = 2_000_000,
    time_budget_s: float | None = None,
    explain: bool = True,
) -> KeyVerdict:
    """
    Check the history of one key.

    Args:
        key: the key (for the verdict only).
        ops: the key's operations, any order; FAIL ops are ignored.
        initial: the key's value before the history (`ABSENT` by default).
        max_steps: deterministic search budget; None for no limit.
        time_budget_s: wall-clock budget; None for no limit.
        explain: on a violation, minimize the history to the operations involved.

    Returns:
        The verdict; UNKNOWN when a budget ran out.
    """
    return _check_component(
        key, (key,), (initial,), ops, max_steps, time_budget_s, explain
    )


def _check_component(
    name: str,
    keys: Sequence[str],
    initial: Sequence[Hashable],
    ops: Sequence[Operation],
    max_steps: int | None,
    time_budget_s: float | None,
    explain: bool,
) -> KeyVerdict:
    """Check the history of `keys` (no op outside them), which start at `initial`."""
    model = _Model(keys, initial)
    live = [op for op in ops if op.outcome is not Outcome.FAIL]
    live.sort(key=lambda op: op.invoke_time)
    budget = _Budget(max_steps, time_budget_s)
    stuck = _Stuck()
    try:
        if _search(live, model, budget, stuck):
            return KeyVerdict(name, Verdict.OK, len(live), budget.steps)
    except _OutOfBudget:
        # Unknown writes nobody observed are what usually blows the search up: retry
        # without them (a sufficient condition only, so it can prove OK, never a violation).
        pruned = _prune_unknown(live)
        retry = _Budget(max_steps, time_budget_s)
        try:
            if len(pruned) < len(live) and _search(pruned, model, retry, None):
                return KeyVerdict(name, Verdict.OK, len(live), budget.steps + retry.steps)
        except _OutOfBudget:
            pass
        return KeyVerdict(
            name,
            Verdict.UNKNOWN,
            len(live),
            budget.steps + retry.steps,
            message=f"search budget exhausted after {budget.steps + retry.steps} steps",
        )
    steps = budget.steps
    blocking = live[stuck.blocking]
    message = (
        f"no linearization passes {blocking.describe()}; deepest partial order had "
        f"{stuck.depth} ops, state={_describe_state(keys, stuck.state)}"
    )
    explanation: list[Operation] = [live[i] for i in stuck.tail] + [blocking]
    if explain:
        # First cut: nothing invoked after the blocking op completed is needed.
        end = blocking.complete_time if blocking.complete_time is not None else 0.0
        prefix = [op for op in live if op.invoke_time <= end]
        # Explaining is a courtesy: bounded, and independent of the verdict.
        mini_budget = _Budget(_EXPLAIN_STEPS, time_budget_s)
        try:
            if _search(prefix, model, mini_budget, None):
                prefix = live
        except _OutOfBudget:
            prefix = live
        minimal = _minimize(prefix, model, initial, mini_budget)
        if len(minimal) < len(live) and len(minimal) <= 64:
            explanation = sorted(minimal, key=lambda op: op.invoke_time)
    return KeyVerdict(
        name, Verdict.VIOLATION, len(live), steps, tuple(explanation), message
    )


def _describe_state(keys: Sequence[str], state: Hashable) -> str:
    """`k1=(value, version, expires_at, lease)` per key, and the clock."""
    if not isinstance(state, tuple) or len(state) != 2:
        return repr(state)
    clock, cells = state
    shown = ", ".join(f"{k}={c!r}" for k, c in zip(keys, cells))
    return f"{{{shown}}} clock={clock!r}"


def _components(ops: Iterable[Operation]) -> dict[tuple[str, ...], list[Operation]]:
    """Split a history into groups of keys no operation spans (union-find over keys)."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        root = parent.setdefault(key, key)
        while root != parent[root]:
            root = parent[root]
        parent[key] = root
        return root

    ops = list(ops)
    for op in ops:
        first, *rest = op.all_keys
        for other in rest:
            a, b = find(first), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[str, list[Operation]] = {}
    members: dict[str, set[str]] = {}
    for op in ops:
        root = find(op.key)
        groups.setdefault(root, []).append(op)
        members.setdefault(root, set()).update(op.all_keys)
    return {tuple(sorted(members[root])): group for root, group in groups.items()}


def check_history(
    ops: Iterable[Operation],
    *,
    initial: dict[str, Hashable] | None = None,
    max_steps_per_key: int | None = 2_000_000,
    time_budget_s_per_key: float | None = None,
    explain: bool = True,
) -> CheckResult:
    """
    Check a whole key-value history, one component of keys at a time.

    Args:
        ops: every recorded operation (any order, any keys).
        initial: values of keys before the history; missing keys start `ABSENT`.
        max_steps_per_key: deterministic search budget per component; None for no limit.
        time_budget_s_per_key: wall-clock budget per component; None for no limit.
        explain: minimize violating histories to the operations involved.

    Returns:
        A `CheckResult` with one `KeyVerdict` per component, named by its keys joined
        with "+" (a single key's component is named by the key).
    """
    start = initial or {}
    verdicts = {}
    for keys, group in sorted(_components(ops).items()):
        name = "+".join(keys)
        verdicts[name] = _check_component(
            name,
            keys,
            tuple(start.get(k, ABSENT) for k in keys),
            group,
            max_steps_per_key,
            time_budget_s_per_key,
            explain,
        )
    return CheckResult(verdicts)
