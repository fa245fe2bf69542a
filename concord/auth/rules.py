"""
Roles and ACL rules: who may read, write or administer which keys.

Pure. A rule is (pattern, perm, effect):

    pattern  an exact key ("config") or a prefix ending in one "*" ("feature:*"; "*" is
             every key); "*" anywhere else is refused
    perm     read < write < admin
    effect   allow | deny

A rule applies to a need (key, perm P) when its pattern matches the key and

    allow rules: the rule's perm >= P   (allow write also allows read)
    deny rules:  the rule's perm <= P   (deny read also denies write and admin)

Of the rules that apply, the most specific wins: an exact key beats any prefix, a longer
prefix beats a shorter one; on a tie deny wins. No rule applies: denied.

A need over a whole range of keys (a prefix, `get_all`, a query, `events`) is granted only
if it is granted for every key the range can hold (all or nothing): the most specific
rule covering the whole range must allow, and no more specific rule inside the range may
deny.

Built-in roles (never stored, never overwritten): admin = ["*", admin, allow],
editor = ["*", write, allow], viewer = ["*", read, allow].
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from concord.errors import InvalidRequestError


class Perm(enum.IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3


class Effect(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


_PERMS: Final = {p.name.lower(): p for p in Perm}
ROLE_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
MAX_RULES: Final = 256
MAX_PATTERN_CHARS: Final = 1024


@dataclass(frozen=True, slots=True)
class Rule:
    """One ACL rule (module docstring)."""

    pattern: str
    perm: Perm
    effect: Effect
    # Derived from the three above once, at construction: the checks run on every request.
    #: the pattern ends in "*"
    is_prefix: bool = field(init=False, repr=False, compare=False)
    #: the pattern without its trailing "*"
    literal: str = field(init=False, repr=False, compare=False)
    #: larger is more specific: (length of the literal, 1 for an exact key)
    specificity: tuple[int, int] = field(init=False, repr=False, compare=False)
    #: the effect is deny
    is_deny: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        is_prefix = self.pattern.endswith("*")
        literal = self.pattern[:-1] if is_prefix else self.pattern
        object.__setattr__(self, "is_prefix", is_prefix)
        object.__setattr__(self, "literal", literal)
        object.__setattr__(self, "specificity", (len(literal), 0 if is_prefix else 1))
        object.__setattr__(self, "is_deny", self.effect is Effect.DENY)

    def matches(self, key: str) -> bool:
        if self.is_prefix:
            return key.startswith(self.literal)
        return key == self.pattern

    def applies(self, perm: Perm) -> bool:
        return self.perm <= perm if self.is_deny else self.perm >= perm

    def to_list(self) -> list[str]:
        return [self.pattern, self.perm.name.lower(), self.effect.value]


BUILTIN_ROLES: Final[dict[str, tuple[Rule, ...]]] = {
    "admin": (Rule("*", Perm.ADMIN, Effect.ALLOW),),
    "editor": (Rule("*", Perm.WRITE, Effect.ALLOW),),
    "viewer": (Rule("*", Perm.READ, Effect.ALLOW),),
}


def parse_perm(value: object) -> Perm:
    perm = _PERMS.get(value) if isinstance(value, str) else None
    if perm is None:
        raise InvalidRequestError(f"perm must be one of read, write, admin, got {value!r}")
    return perm


def parse_rule(raw: object) -> Rule:
    """
    A rule from its wire form [pattern, perm, effect].

    Raises:
        InvalidRequestError: naming the bad part.
    """
    if not isinstance(raw, (list, tuple)) or len(raw) != 3:
        raise InvalidRequestError(f"a rule is [pattern, perm, effect], got {raw!r}")
    pattern, perm, effect = raw
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidRequestError(f"rule pattern must be a string of 1..{MAX_PATTERN_CHARS} characters")
    if "*" in pattern[:-1]:
        raise InvalidRequestError(f"rule pattern {pattern!r}: '*' is allowed only at the end")
    if effect not in ("allow", "deny"):
        raise InvalidRequestError(f"rule effect must be allow or deny, got {effect!r}")
    return Rule(pattern, parse_perm(perm), Effect(effect))


def parse_rules(raw: object) -> tuple[Rule, ...]:
    if not isinstance(raw, (list, tuple)):
        raise InvalidRequestError("rules must be a list of [pattern, perm, effect]")
    if len(raw) > MAX_RULES:
        raise InvalidRequestError(f"{len(raw)} rules, more than the maximum {MAX_RULES}")
    return tuple(parse_rule(r) for r in raw)


def check_role_name(name: object) -> str:
    if not isinstance(name, str) or ROLE_NAME_RE.fullmatch(name) is None:
        raise InvalidRequestError(f"role name must match [A-Za-z0-9_.-]{{1,64}}, got {name!r}")
    return name


def _winner(rules: Iterable[Rule]) -> Rule | None:
    """The most specific rule; deny wins a tie."""
    best: Rule | None = None
    for rule in rules:
        if best is None or rule.specificity > best.specificity or (
            rule.specificity == best.specificity and rule.is_deny
        ):
            best = rule
    return best


def allows_key(rules: Sequence[Rule], key: str, perm: Perm) -> bool:
    """Whether `rules` grant `perm` on `key`."""
    best: Rule | None = None
    for rule in rules:  # NB: _winner inlined over the applicable rules (hot path)
        if not rule.applies(perm) or not (key.startswith(rule.literal) if rule.is_prefix
                                          else key == rule.pattern):
            continue
        if best is None or rule.specificity > best.specificity or (
                rule.specificity == best.specificity and rule.is_deny):
            best = rule
    return best is not None and not best.is_deny


def allows_prefix(rules: Sequence[Rule], prefix: str, perm: Perm) -> bool:
    """
    Whether `rules` grant `perm` on every key starting with `prefix` ("" = every key).
    """
    covering = []
    for rule in rules:
        if not rule.applies(perm):
            continue
        if rule.is_prefix and prefix.startswith(rule.literal):
            covering.append(rule)  # holds for the whole range
        elif rule.literal.startswith(prefix) and rule.effect is Effect.DENY:
            return False  # a more specific deny inside the range: not all keys allowed
    winner = _winner(covering)
    return winner is not None and winner.effect is Effect.ALLOW


def common_prefix(lo: str, hi: str) -> str:
    """The longest common prefix of two keys (every key in [lo, hi] starts with it)."""
    n = 0
    for a, b in zip(lo, hi):
        if a != b:
            break
        n += 1
    return lo[:n]
