"""
Test-only fault filter for Raft peer links: drop, delay, one-way block, partition, heal.

Inert unless enabled (config `faults.enabled`); a disabled filter rejects every command
and never touches a message. Rules are per directed link (src -> dst) and are set at
runtime through `apply_command`, which the node exposes as the admin op `fault` so tests
can partition real processes. Randomness comes from one seeded `random.Random`; no clock
is read here (the transport passes `now`).

Where a rule acts (each node holds its own copy of the rules it was sent):
- `block` and `partition` act at BOTH ends: the sender drops its outgoing messages on
  a blocked link and the receiver discards incoming ones. Idempotent, so one command to
  one node is enough to cut it off, and sending the same command to every node is fine.
- `drop` (probability) and `delay` act only at the SENDER (the node whose id is `src`),
  so broadcasting them to every node does not apply them twice.

Commands (dicts; node ids are str):
    {"cmd": "drop", "src": a, "dst": b, "probability": 0.0..1.0}
    {"cmd": "delay", "src": a, "dst": b, "min_ms": int >= 0, "max_ms": int >= min_ms}
        (fixed delay when min_ms == max_ms; "ms": n is shorthand for min = max = n)
    {"cmd": "block", "src": a, "dst": b}               one-way a -> b
    {"cmd": "partition", "a": [ids], "b": [ids]}        two-way between the groups
    {"cmd": "heal"}                                     clear every rule
    {"cmd": "heal", "src": a, "dst": b}                 clear both directions of a link
    {"cmd": "seed", "seed": int}                        reseed the RNG
    {"cmd": "status"}                                   no change
Every successful command returns {"enabled": true, "rules": [...]}, the rules after it.

Pings pass through the filter like DATA (so a partitioned peer turns unreachable) and
draw from the same RNG: in a live process the sequence of draws depends on ping timing,
so a seed reproduces drops exactly only where the caller controls the clock (unit tests).
Whole-cluster determinism is the simulator's job (concord/sim), not this filter's.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace
from typing import Mapping

from concord.errors import InvalidRequestError
from concord.ids import NodeId

__all__ = ["FaultFilter", "LinkRule", "Verdict", "DROP", "PASS"]


@dataclass(frozen=True, slots=True)
class LinkRule:
    """The faults on one directed link."""

    blocked: bool = False
    drop_probability: float = 0.0
    delay_min_s: float = 0.0
    delay_max_s: float = 0.0

    def is_clear(self) -> bool:
        """True when the rule does nothing."""
        return LinkRule() == self


class Action(enum.Enum):
    PASS = "pass"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one message: pass it (after `delay_s`) or drop it."""

    action: Action
    delay_s: float = 0.0


PASS = Verdict(Action.PASS)
DROP = Verdict(Action.DROP)


def _node(cmd: Mapping[str, object], name: str) -> NodeId:
    value = cmd.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"fault command field {name} must be a non-empty node id string")
    return NodeId(value)


def _nodes(cmd: Mapping[str, object], name: str) -> list[NodeId]:
    value = cmd.get(name)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise InvalidRequestError(f"fault command field {name} must be a non-empty list of node ids")
    return [NodeId(v) for v in value]


def _number(cmd: Mapping[str, object], name: str, lo: float, hi: float | None) -> float:
    value = cmd.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(f"fault command field {name} must be a number")
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise InvalidRequestError(f"fault command field {name}={value} is out of range {bound}")
    return float(value)


_FIELDS: dict[str, frozenset[str]] = {
    "drop": frozenset({"cmd", "src", "dst", "probability"}),
    "delay": frozenset({"cmd", "src", "dst", "min_ms", "max_ms", "ms"}),
    "block": frozenset({"cmd", "src", "dst"}),
    "partition": frozenset({"cmd", "a", "b"}),
    "heal": frozenset({"cmd", "src", "dst"}),
    "seed": frozenset({"cmd", "seed"}),
    "status": frozenset({"cmd"}),
}


class FaultFilter:
    """
    Per-link fault rules for one node, consulted on every send and receive.

    Args:
        node_id: the node this filter runs in.
        enabled: False makes the filter inert and every command an error.
        seed: seed of the RNG used for drop and random delay draws.
    """

    def __init__(self, node_id: NodeId, enabled: bool = False, seed: int = 0) -> None:
        self.node_id = node_id
        self.enabled = enabled
        self._rng = random.Random(seed)
        self._rules: dict[tuple[NodeId, NodeId], LinkRule] = {}

    def on_send(self, dst: NodeId) -> Verdict:
        """The verdict for a message from this node to `dst`."""
        if not self._rules:
            return PASS
        rule = self._rules.get((self.node_id, dst))
        if rule is None:
            return PASS
        if rule.blocked:
            return DROP
        if rule.drop_probability > 0.0 and self._rng.random() < rule.drop_probability:
            return DROP
        if rule.delay_max_s > 0.0:
            if rule.delay_min_s == rule.delay_max_s:
                return Verdict(Action.PASS, rule.delay_min_s)
            return Verdict(Action.PASS, self._rng.uniform(rule.delay_min_s, rule.delay_max_s))
        return PASS

    def on_recv(self, src: NodeId) -> Verdict:
        """The verdict for a message from `src` arriving here (blocks only)."""
        if not self._rules:
            return PASS
        rule = self._rules.get((src, self.node_id))
        if rule is not None and rule.blocked:
            return DROP
        return PASS

    def rules(self) -> list[dict[str, object]]:
        """The current rules, sorted by link, as plain dicts."""
        return [
            {
                "src": src,
                "dst": dst,
                "blocked": rule.blocked,
                "drop_probability": rule.drop_probability,
                "delay_min_ms": round(rule.delay_min_s * 1000.0, 3),
                "delay_max_ms": round(rule.delay_max_s * 1000.0, 3),
            }
            for (src, dst), rule in sorted(self._rules.items())
        ]

    def apply_command(self, cmd: Mapping[str, object]) -> dict[str, object]:
        """
        Validate and apply one fault command (see the module docstring).

        Raises:
            InvalidRequestError: the filter is disabled, or the command is malformed.
        """
        if not self.enabled:
            raise InvalidRequestError("fault injection is disabled on this node (faults.enabled = false)")
        if not isinstance(cmd, Mapping):
            raise InvalidRequestError("fault command must be a map")
        name = cmd.get("cmd")
        if not isinstance(name, str) or name not in _FIELDS:
            raise InvalidRequestError(f"unknown fault command {name!r}; expected one of {', '.join(sorted(_FIELDS))}")
        extra = sorted(str(k) for k in cmd if k not in _FIELDS[name])
        if extra:
            raise InvalidRequestError(f"fault command {name} does not take {', '.join(extra)}")
        if name == "drop":
            src, dst = _node(cmd, "src"), _node(cmd, "dst")
            p = _number(cmd, "probability", 0.0, 1.0)
            self._update(src, dst, drop_probability=p)
        elif name == "delay":
            src, dst = _node(cmd, "src"), _node(cmd, "dst")
            if "ms" in cmd:
                if "min_ms" in cmd or "max_ms" in cmd:
                    raise InvalidRequestError("fault command delay takes ms or min_ms/max_ms, not both")
                lo = hi = _number(cmd, "ms", 0.0, None)
            else:
                lo = _number(cmd, "min_ms", 0.0, None)
                hi = _number(cmd, "max_ms", lo, None)
            self._update(src, dst, delay_min_s=lo / 1000.0, delay_max_s=hi / 1000.0)
        elif name == "block":
            self._update(_node(cmd, "src"), _node(cmd, "dst"), blocked=True)
        elif name == "partition":
            group_a, group_b = _nodes(cmd, "a"), _nodes(cmd, "b")
            if set(group_a) & set(group_b):
                raise InvalidRequestError("fault command partition groups a and b overlap")
            for x in group_a:
                for y in group_b:
                    self._update(x, y, blocked=True)
                    self._update(y, x, blocked=True)
        elif name == "heal":
            if "src" in cmd or "dst" in cmd:
                src, dst = _node(cmd, "src"), _node(cmd, "dst")
                self._rules.pop((src, dst), None)
                self._rules.pop((dst, src), None)
            else:
                self._rules.clear()
        elif name == "seed":
            value = cmd.get("seed")
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidRequestError("fault command field seed must be an integer")
            self._rng.seed(value)
        return {"enabled": True, "rules": self.rules()}

    def _update(self, src: NodeId, dst: NodeId, **changes: float | bool) -> None:
        if src == dst:
            raise InvalidRequestError(f"fault link {src} -> {dst} is a self-link")
        rule = replace(self._rules.get((src, dst), LinkRule()), **changes)  # type: ignore[arg-type]
        if rule.is_clear():
            self._rules.pop((src, dst), None)
        else:
            self._rules[(src, dst)] = rule
