"""
The vocabulary of the client protocol's op table (concord.net.wire `OPS`): where an op
goes (`Backend`), what it is (`OpKind`), the permission it needs (`Access`), its
argument types with their checks and texts (`ArgType`), and the `Arg` and `OpSpec`
records the table is made of. The table itself, and everything derived from it, is in
concord.net.wire, which re-exports every name here.

Pure: no sockets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Mapping


class Backend(enum.Enum):
    """Where the front door sends an op."""

    READ = "read"
    """A read worker (shared memory); `consistency="strong"` moves it to RAFT."""

    RAFT = "raft"
    """The raft worker: writes, strong-read barriers, membership, admin."""


class OpKind(enum.Enum):
    """What retrying an op may do: the client's resend rule (docs/client.md)."""

    READ = "read"
    """Changes nothing: resent freely, no session."""

    WRITE = "write"
    """A log entry the state machine deduplicates: carries (client_id, seq) and is
    resent with the same pair after silence."""

    ADMIN = "admin"
    """Changes the cluster and is not deduplicated: never resent after silence."""


class Access(enum.Enum):
    """
    What an op needs when auth is on (docs/security.md "Permissions"): the ONE place
    each op's permission is declared; `concord.node.auth` derives the checks from it.
    """

    PUBLIC = "public"
    """No token (only `bootstrap`, which works only while no token exists)."""

    TOKEN = "token"
    """Any valid token (status, members, whoami)."""

    READ_KEYS = "read_keys"
    """Read on every key the op names (`key`, `keys`): all or nothing."""

    WRITE_KEYS = "write_keys"
    """Write on every key the op names (`key`, `keys`, `items`): all or nothing."""

    READ_RANGE = "read_range"
    """Read on the whole range the op covers (its `prefix`, `range`; else every key)."""

    WRITE_RANGE = "write_range"
    """Write on the whole range the op covers (`delete_where`, index ops)."""

    ADMIN = "admin"
    """A cluster admin token: a root (tenant-less) token with admin on every key."""


class ArgType(enum.Enum):
    """The declared type of one argument."""

    STR = "str"
    INT = "int"  # never bool
    NUMBER = "number"  # int or float, never bool
    BOOL = "bool"
    ANY = "any"  # any msgpack value (nil, bool, int, float, str, bytes, list, map)
    MAP = "map"  # map with str keys
    STR_LIST = "str_list"
    STR_PAIR = "str_pair"  # [lo, hi]
    KEY_RANGE = "key_range"  # [lo, hi], each a str or nil (an open end)
    FILTER = "filter"  # a `where` filter: ["op", ...] (docs/formats/kv.md)
    OPT_NUMBER = "opt_number"  # a number, or nil
    FIELD_PATH = "field_path"  # "a.b" or ["a", "b", 0]
    ITEMS = "items"  # [[key, value, ttl?], ...]
    TTL_ITEMS = "ttl_items"  # [[key, ttl], ...]
    CONSISTENCY = "consistency"  # "eventual" | "leader" | "strong"
    STR_OR_BYTES = "str_or_bytes"
    POSITIVE_INT = "positive_int"
    NON_NEGATIVE_INT = "non_negative_int"


CONSISTENCY_LEVELS = ("eventual", "leader", "strong")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float))) and not isinstance(value, bool)


def _is_items(value: object) -> bool:
    if not isinstance(value, list):
        return False
    for item in value:
        if not isinstance(item, list) or len(item) not in (2, 3) or not isinstance(item[0], str):
            return False
        if len(item) == 3 and item[2] is not None and not _is_number(item[2]):
            return False
    return True


def _is_ttl_items(value: object) -> bool:
    if not isinstance(value, list):
        return False
    return all(
        isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and _is_number(item[1])
        for item in value
    )


_CHECKS: dict[ArgType, Callable[[object], bool]] = {
    ArgType.STR: lambda v: isinstance(v, str),
    ArgType.INT: _is_int,
    ArgType.NUMBER: _is_number,
    ArgType.BOOL: lambda v: isinstance(v, bool),
    ArgType.ANY: lambda v: True,
    ArgType.MAP: lambda v: isinstance(v, dict),
    ArgType.STR_LIST: lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    ArgType.STR_PAIR: lambda v: isinstance(v, list)
    and len(v) == 2
    and all(isinstance(x, str) for x in v),
    ArgType.KEY_RANGE: lambda v: isinstance(v, list)
    and len(v) == 2
    and all(x is None or isinstance(x, str) for x in v),
    ArgType.FILTER: lambda v: isinstance(v, list) and len(v) > 0 and isinstance(v[0], str),
    ArgType.OPT_NUMBER: lambda v: v is None or _is_number(v),
    ArgType.FIELD_PATH: lambda v: isinstance(v, str)
    or (isinstance(v, list) and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v)),
    ArgType.ITEMS: _is_items,
    ArgType.TTL_ITEMS: _is_ttl_items,
    ArgType.CONSISTENCY: lambda v: isinstance(v, str) and v in CONSISTENCY_LEVELS,
    ArgType.STR_OR_BYTES: lambda v: isinstance(v, (str, bytes)),
    ArgType.POSITIVE_INT: lambda v: _is_int(v) and v > 0,  # type: ignore[operator]
    ArgType.NON_NEGATIVE_INT: lambda v: _is_int(v) and v >= 0,  # type: ignore[operator]
}


_TYPE_TEXT: dict[ArgType, str] = {
    ArgType.STR: "a string",
    ArgType.INT: "an integer",
    ArgType.NUMBER: "a number",
    ArgType.BOOL: "a boolean",
    ArgType.ANY: "any value",
    ArgType.MAP: "a map",
    ArgType.STR_LIST: "a list of strings",
    ArgType.STR_PAIR: "a list of two strings [lo, hi]",
    ArgType.KEY_RANGE: "a list [lo, hi] of two strings or nils",
    ArgType.FILTER: "a filter list [op, ...]",
    ArgType.OPT_NUMBER: "a number or nil",
    ArgType.FIELD_PATH: "a field path (a string or a list of strings and integers)",
    ArgType.ITEMS: "a list of [key, value] or [key, value, ttl] lists",
    ArgType.TTL_ITEMS: "a list of [key, ttl] lists",
    ArgType.CONSISTENCY: "one of eventual, leader, strong",
    ArgType.STR_OR_BYTES: "a string or bytes",
    ArgType.POSITIVE_INT: "a positive integer",
    ArgType.NON_NEGATIVE_INT: "a non-negative integer",
}


@dataclass(frozen=True, slots=True)
class Arg:
    """One declared argument of an op."""

    name: str
    type: ArgType
    required: bool = False
    doc: str = ""


@dataclass(frozen=True, slots=True)
class OpSpec:
    """
    One op of the protocol: its args, its kind, where the front door sends it, and
    (`access`) the permission it needs when auth is on.

    `one_of` lists groups of arg names of which exactly one must be present. `local`:
    a same-host client may serve it from the node's shared memory (`eventual`, and
    `leader` while the node holds its lease; concord.client.local). `inline`: its cost is
    bounded by the keys it names (never a scan), so the front door may answer it itself
    from shared memory instead of sending it to a read worker (docs/architecture.md).
    """

    name: str
    backend: Backend
    args: tuple[Arg, ...] = ()
    one_of: tuple[tuple[str, ...], ...] = ()
    doc: str = ""
    kind: OpKind = OpKind.READ
    local: bool = False
    access: Access = Access.ADMIN
    inline: bool = False
    arg_index: Mapping[str, Arg] = field(init=False, repr=False, compare=False)
    #: Derived from `args` for the request decoder's one pass (concord.net.wire): each
    #: arg's type check by name, and the names of the required ones.
    arg_checks: Mapping[str, Callable[[object], bool]] = field(init=False, repr=False, compare=False)
    required: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "arg_index", {a.name: a for a in self.args})
        object.__setattr__(self, "arg_checks", {a.name: _CHECKS[a.type] for a in self.args})
        object.__setattr__(self, "required", tuple(a.name for a in self.args if a.required))
        if self.local and (self.backend is not Backend.READ or self.kind is not OpKind.READ):
            raise ValueError(f"op {self.name}: only a read served by read workers can be local")
        if self.inline and not self.local:
            raise ValueError(f"op {self.name}: only a local read can be served inline by the front door")

    @property
    def session(self) -> bool:
        """Whether the op carries (client_id, seq): the writes the state machine deduplicates."""
        return self.kind is OpKind.WRITE
