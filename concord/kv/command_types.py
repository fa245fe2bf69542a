"""
The decoded kv commands: one frozen dataclass per write op, `Command` (their union)
and `Envelope` (a command with its session pair and credential). `decode_command` in
concord.kv.commands builds them from a log entry's bytes, strictly checked; apply
(concord.kv.machine) executes them. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from concord.auth.commands import AuthCommand
from concord.auth.tokens import Credential
from concord.kv.query import QuerySpec
from concord.kv.record import hot_record
from concord.kv.values import Path


@hot_record
class Put:
    key: str
    value: bytes
    flags: int
    ttl_ms: int
    lease: int = 0  # the lease the key is attached to, 0 for none


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Touch:
    key: str
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class PutMany:
    items: tuple[Put, ...]


@dataclass(frozen=True, slots=True)
class DeleteMany:
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TouchMany:
    items: tuple[Touch, ...]


@dataclass(frozen=True, slots=True)
class Condition:
    """
    A CAS condition on a key's live state.

    kind is "expected" (operand: the decoded expected value), "version", "mod_revision"
    (operand: int; 0 matches an absent key) or "absent" (operand None).
    """

    kind: str
    operand: object


@dataclass(frozen=True, slots=True)
class PutIf:
    put: Put
    cond: Condition


@dataclass(frozen=True, slots=True)
class DeleteIf:
    key: str
    cond: Condition


@dataclass(frozen=True, slots=True)
class Expire:
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeleteWhere:
    query: QuerySpec


@dataclass(frozen=True, slots=True)
class CreateIndex:
    name: str
    field: str | list[str | int]
    path: Path


@dataclass(frozen=True, slots=True)
class DropIndex:
    name: str


@dataclass(frozen=True, slots=True)
class Incr:
    key: str
    delta: int
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class LeaseKeepalive:
    lease: int


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    lease: int


@dataclass(frozen=True, slots=True)
class LeaseExpire:
    leases: tuple[int, ...]


Command = Union[
    Put,
    Delete,
    Touch,
    PutMany,
    DeleteMany,
    TouchMany,
    PutIf,
    DeleteIf,
    Expire,
    DeleteWhere,
    CreateIndex,
    DropIndex,
    Incr,
    LeaseGrant,
    LeaseKeepalive,
    LeaseRevoke,
    LeaseExpire,
    AuthCommand,
]


@hot_record
class Envelope:
    """A decoded command with its optional exactly-once session pair."""

    command: Command
    client_id: str | None = None
    seq: int | None = None
    auth: Credential | None = None
    min_seq: int | None = None  # the client's lowest unacknowledged seq (kv/sessions.py)
