"""
What a key-value client history is made of: operations, their kinds and outcomes, and
the values they carry. Recorded by the simulator's workload and the chaos tool, checked
by `concord.sim.linearizability` against the model of `concord.sim.kvmodel`.

Pure: data only.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ABSENT",
    "NOT_FOUND",
    "Absent",
    "OpKind",
    "Operation",
    "Outcome",
    "Version",
    "Versioned",
    "lease_key",
]


class Absent:
    """The value of a key that does not exist (a singleton: use `ABSENT`)."""

    _instance: Absent | None = None

    def __new__(cls) -> Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT: Final = Absent()

#: The result of a lease op, or of a put with a lease, refused with `not_found` (the lease
#: was never granted, was revoked, or reached its deadline): it changed nothing.
NOT_FOUND: Final = "not_found"

#: The history key a lease's operations carry (so its keys join one checked component).
LEASE_KEY_PREFIX: Final = "@lease/"


def lease_key(lease_id: int) -> str:
    """The pseudo-key of lease `lease_id` in a history (no real key starts with '@')."""
    return f"{LEASE_KEY_PREFIX}{lease_id}"


@dataclass(frozen=True, slots=True)
class Versioned:
    """A read's answer with its key's metadata: the value and the key's `version`."""

    value: Hashable
    version: int


@dataclass(frozen=True, slots=True)
class Version:
    """A put_if condition on the key's version (0: the key does not exist)."""

    version: int


class OpKind(enum.Enum):
    """
    Key-value operations and the shape of their `args` and `result`. A `ttl_ms` of 0 (or
    none given) means no expiry; a key expires once the cluster time (the leader's
    entry timestamps) reaches its put's time plus its ttl.

    - PUT: args `(value,)` or `(value, ttl_ms)`; result ignored.
    - GET: args `()`; result the value read, `ABSENT`, or `Versioned(value, version)`.
    - DELETE: args `()`; result `deleted: bool` (True if the key existed).
    - PUT_IF: args `(expected, new)` or `(expected, new, ttl_ms)`; `expected` is a value,
      `ABSENT` ("put if absent") or `Version(n)`; result `bool` (the condition held and
      the put happened).
    - DELETE_IF: args `(expected,)`; result `bool`.
    - PUT_MANY: `keys` the keys, args `(values, ttl_ms)` with one value per key; atomic.
    - DELETE_MANY: `keys` the keys, args `()`; result the number deleted; atomic.
    - GET_MANY: `keys` the keys, args `()`; result one value (or `ABSENT`) per key, read
      at one point.
    - INCR: args `(delta,)`; result the new integer value (an absent key counts 0 and is
      created without expiry; an existing key keeps its expiry and its lease).

    Leases (docs/protocol.md "Leases"): a lease's operations carry its pseudo-key
    (`lease_key(id)`) as `key`, and a put with a lease carries `keys` (its key, the
    lease's pseudo-key), so every key ever attached to a lease is checked with it.

    - PUT / PUT_IF with a lease: args `(value, 0, lease)` / `(expected, new, 0, lease)`;
      result `NOT_FOUND` when the lease is not live at the entry's time (nothing
      changes), else as without. The key is attached to the lease; any later put
      without it, delete or expiry detaches it (an incr keeps it).
    - LEASE_GRANT: args `(ttl_ms,)`; result the lease id (unique, never reused); the
      deadline is the grant's cluster time plus the TTL.
    - LEASE_KEEPALIVE: args `(lease,)`; result True, or `NOT_FOUND` if the lease is not
      live (deadline reached, revoked, never granted); the deadline becomes the
      keepalive's time plus the TTL.
    - LEASE_REVOKE: args `(lease,)`; result the number of its live keys deleted, or
      `NOT_FOUND`.
    - LEASE_EXPIRE: the leader's `lease_expire` entry (not a client op), `keys` the
      leases' pseudo-keys, args the lease ids; each lease whose deadline is at or before
      the entry's time is dropped with its keys, at that entry and not before (a lease's
      keys stay readable past its deadline until then); result ignored.
    """

    PUT = "put"
    GET = "get"
    DELETE = "delete"
    PUT_IF = "put_if"
    DELETE_IF = "delete_if"
    PUT_MANY = "put_many"
    DELETE_MANY = "delete_many"
    GET_MANY = "get_many"
    INCR = "incr"
    LEASE_GRANT = "lease_grant"
    LEASE_KEEPALIVE = "lease_keepalive"
    LEASE_REVOKE = "lease_revoke"
    LEASE_EXPIRE = "lease_expire"


#: Operations on several keys (`Operation.keys`).
MULTI_KEY_KINDS: Final = frozenset({OpKind.PUT_MANY, OpKind.DELETE_MANY, OpKind.GET_MANY})

#: Operations on leases (a client's; LEASE_EXPIRE is the leader's).
LEASE_KINDS: Final = frozenset(
    {OpKind.LEASE_GRANT, OpKind.LEASE_KEEPALIVE, OpKind.LEASE_REVOKE, OpKind.LEASE_EXPIRE}
)


class Outcome(enum.Enum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Operation:
    """
    One client operation as observed by the client.

    Values must be hashable. Times are in any one unit (virtual ms in the simulator);
    an operation invoked at the same instant another completes counts as concurrent
    with it (the conservative choice). `keys` names every key of a multi-key op (`key`
    is then its first). `ts` is the cluster time the operation took effect at, when
    known (a write's entry timestamp, a read's state-machine time): the order of
    operations must agree with it, and TTLs expire by it. An UNKNOWN operation with a
    `ts` took effect (the recorder saw it applied); its result is still unknown.
    """

    client_id: int
    kind: OpKind
    key: str
    args: tuple[Hashable, ...]
    invoke_time: float
    complete_time: float | None
    outcome: Outcome
    result: Hashable = None
    keys: tuple[str, ...] = ()
    ts: float | None = None

    @property
    def all_keys(self) -> tuple[str, ...]:
        return self.keys or (self.key,)

    def describe(self) -> str:
        """Return one line such as `c3 put_if(k1, 4 -> 9) = True [10.0, 12.5] ok`."""
        args = ", ".join([*self.all_keys, *(repr(a) for a in self.args)])
        if self.kind is OpKind.PUT_IF:
            args = f"{self.key}, {self.args[0]!r} -> {self.args[1]!r}"
            if len(self.args) > 2 and self.args[2]:
                args += f", ttl_ms={self.args[2]!r}"
        end = "?" if self.complete_time is None else f"{self.complete_time:g}"
        shown = "" if self.outcome is not Outcome.OK else f" = {self.result!r}"
        at = "" if self.ts is None else f" ts={self.ts:g}"
        return (
            f"c{self.client_id} {self.kind.value}({args}){shown} "
            f"[{self.invoke_time:g}, {end}]{at} {self.outcome.value}"
        )
