"""
The state machines the simulator can run, behind the driver's StateMachine Protocol,
and the adapter that turns client operations into their commands.

`KvAdapter` runs the real `concord.kv.KvStateMachine` (the default). `RegisterMachine`
is a minimal stand-in kept for tests of the simulator itself: a map of registers with
put, delete, put_if and delete_if; its commands are JSON (version field "v").
Pure and deterministic.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol

from concord.auth.tokens import Credential
from concord.kv import KvStateMachine, decode_command, encode_command
from concord.kv.command_types import LeaseExpire
from concord.raft.statemachine import StateMachine
from concord.sim.history import ABSENT, NOT_FOUND, OpKind, Version, Versioned

__all__ = ["Adapter", "KvAdapter", "RegisterAdapter", "RegisterApplied", "RegisterMachine"]

COMMAND_VERSION = 1
_LEASE_EXPIRE = b"lease_expire"
#: The lease ops whose successful reply the model compares: the granted id, or "kept alive".
_LEASE_REPLIES = (OpKind.LEASE_GRANT, OpKind.LEASE_KEEPALIVE)


@dataclass(frozen=True, slots=True)
class RegisterApplied:
    result: object


class RegisterMachine:
    """Registers keyed by string, values are ints. Snapshot: JSON of the map."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self._applied_index = 0
        self.last_timestamp_ms = 0

    @property
    def applied_index(self) -> int:
        return self._applied_index

    def apply(self, index: int, timestamp_ms: int, data: bytes) -> RegisterApplied:
        cmd = json.loads(data)
        if cmd.get("v") != COMMAND_VERSION:
            raise ValueError(f"unknown command version {cmd.get('v')!r}")
        self._advance(index, timestamp_ms)
        op, key = cmd["op"], cmd["key"]
        values = self.values
        if op == "put":
            values[key] = cmd["value"]
            return RegisterApplied({"revision": index})
        if op == "delete":
            existed = values.pop(key, None) is not None
            return RegisterApplied({"deleted": existed, "revision": index})
        if op == "put_if":
            expected = cmd.get("expected")
            current = values.get(key)
            held = current is None if cmd.get("absent") else current == expected
            if held:
                values[key] = cmd["value"]
            return RegisterApplied({"ok": held, "revision": index})
        if op == "delete_if":
            current = values.get(key)
            held = current is not None and current == cmd["expected"]
            if held:
                del values[key]
            return RegisterApplied({"ok": held, "revision": index})
        raise ValueError(f"unknown op {op!r}")

    def apply_noop(self, index: int, timestamp_ms: int) -> None:
        self._advance(index, timestamp_ms)

    def _advance(self, index: int, timestamp_ms: int) -> None:
        if index != self._applied_index + 1:
            raise AssertionError(f"apply out of order: {index} after {self._applied_index}")
        self._applied_index = index
        self.last_timestamp_ms = timestamp_ms

    def snapshot(self) -> bytes:
        body = {"applied": self._applied_index, "ts": self.last_timestamp_ms,
                "values": self.values}
        return json.dumps(body, sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        body = json.loads(data)
        self.values = dict(body["values"])
        self._applied_index = body["applied"]
        self.last_timestamp_ms = body["ts"]

    def state_hash(self) -> int:
        return zlib.crc32(json.dumps(self.values, sort_keys=True).encode())

    def get(self, key: str) -> int | None:
        return self.values.get(key)


_SINGLE_KEY_KINDS = frozenset(
    {OpKind.PUT, OpKind.GET, OpKind.DELETE, OpKind.PUT_IF, OpKind.DELETE_IF}
)


class Adapter(Protocol):
    """
    Turns client operations into commands, replies into results, and reads keys.

    `kinds` are the operations its machine runs (the workload draws from them);
    `sessions` says whether its machine applies a (client id, seq) write once, `ttl`
    whether it expires keys, `versions` whether it keeps key versions.
    """

    name: str
    kinds: frozenset[OpKind]
    sessions: bool
    ttl: bool
    versions: bool

    def new_machine(self) -> StateMachine: ...

    def encode(
        self,
        kind: OpKind,
        key: str,
        args: tuple[Hashable, ...],
        keys: tuple[str, ...] = (),
        session: tuple[str, int] | None = None,
        min_seq: int | None = None,
    ) -> bytes: ...

    def decode(self, kind: OpKind, result: object) -> Hashable: ...

    def read(self, machine: StateMachine, key: str) -> Hashable: ...

    def read_many(self, machine: StateMachine, keys: tuple[str, ...]) -> Hashable: ...

    def now_ms(self, machine: StateMachine) -> int:
        """The cluster time reads of `machine` are evaluated at."""
        ...

    def session_of(self, data: bytes) -> tuple[str, int] | None:
        """The (client id, seq) a command carries, if any."""
        ...

    def expiry_command(self, machine: StateMachine, now_ms: int) -> bytes | None:
        """The expiry entry a leader proposes at cluster time `now_ms` (node core's ProposeExpiry)."""
        ...

    def expired_leases(self, data: bytes) -> tuple[int, ...]:
        """The lease ids of a `lease_expire` entry (empty for any other entry)."""
        ...


def _ttl_s(ms: Hashable) -> float | None:
    """The wire `ttl` (seconds) of a model TTL in ms (0: none)."""
    return ms / 1000 if isinstance(ms, int) and ms > 0 else None


def _decode_lease(kind: OpKind, result: dict[object, object]) -> Hashable:
    """The model's value of a successful lease reply: the granted id, or True (kept alive)."""
    if kind is OpKind.LEASE_KEEPALIVE:
        return True
    lease = result["lease"]
    assert isinstance(lease, int), result
    return lease


class KvAdapter:
    """The adapter for the real state machine, concord.kv (values are ints)."""

    name = "kv"
    kinds = frozenset(OpKind)
    sessions = True
    ttl = True
    versions = True
    #: The credential every write carries (concord.sim.auth's adapter sets one).
    credential: Credential | None = None

    def new_machine(self) -> StateMachine:
        return KvStateMachine()

    def encode(
        self,
        kind: OpKind,
        key: str,
        args: tuple[Hashable, ...],
        keys: tuple[str, ...] = (),
        session: tuple[str, int] | None = None,
        min_seq: int | None = None,
    ) -> bytes:
        op, body = self._command(kind, key, args, keys)
        if session is None:
            return encode_command(op, body, auth=self.credential)
        return encode_command(op, body, client_id=session[0], seq=session[1], min_seq=min_seq,
                              auth=self.credential)

    def _command(
        self, kind: OpKind, key: str, args: tuple[Hashable, ...], keys: tuple[str, ...]
    ) -> tuple[str, dict[str, object]]:
        body: dict[str, object]
        if kind is OpKind.LEASE_GRANT:
            return "lease_grant", {"ttl": _ttl_s(args[0])}
        if kind in (OpKind.LEASE_KEEPALIVE, OpKind.LEASE_REVOKE):
            return kind.value, {"lease": args[0]}
        if kind is OpKind.PUT:
            body = {"key": key, "value": args[0], "ttl": _ttl_s(args[1] if len(args) > 1 else 0)}
            if len(args) > 2:
                body["lease"] = args[2]
            return "put", body
        if kind is OpKind.DELETE:
            return "delete", {"key": key}
        if kind is OpKind.PUT_IF:
            expected, value = args[0], args[1]
            body = {"key": key, "value": value, "ttl": _ttl_s(args[2] if len(args) > 2 else 0)}
            if len(args) > 3:
                body["lease"] = args[3]
            if expected is ABSENT:
                body["absent"] = True
            elif isinstance(expected, Version):
                body["version"] = expected.version
            else:
                body["expected"] = expected
            return "put_if", body
        if kind is OpKind.DELETE_IF:
            return "delete_if", {"key": key, "expected": args[0]}
        if kind is OpKind.PUT_MANY:
            values, ttl_ms = args
            assert isinstance(values, tuple)
            ttl = _ttl_s(ttl_ms)
            items = [[k, v] if ttl is None else [k, v, ttl] for k, v in zip(keys, values)]
            return "put_many", {"items": items}
        if kind is OpKind.DELETE_MANY:
            return "delete_many", {"keys": list(keys)}
        if kind is OpKind.INCR:
            return "incr", {"key": key, "delta": args[0]}
        raise ValueError(f"{kind} is not a write")

    def decode(self, kind: OpKind, result: object) -> Hashable:
        assert isinstance(result, dict), result
        error = result.get("error")
        if error == "not_found" and kind in (OpKind.PUT, OpKind.PUT_IF, OpKind.LEASE_KEEPALIVE,
                                             OpKind.LEASE_REVOKE):
            return NOT_FOUND  # a lease not live: nothing changed
        if kind in (OpKind.PUT_IF, OpKind.DELETE_IF):
            if error == "condition_failed":
                return False
            assert error is None, result
            return True
        assert error is None, result
        if kind is OpKind.INCR:
            value = result["value"]
            assert isinstance(value, int), result
            return value
        if kind in _LEASE_REPLIES:
            return _decode_lease(kind, result)
        if kind is OpKind.DELETE:
            return bool(result["deleted"])
        if kind in (OpKind.DELETE_MANY, OpKind.LEASE_REVOKE):
            deleted = result["deleted"]
            assert isinstance(deleted, int), result
            return deleted
        return None

    def read(self, machine: StateMachine, key: str) -> Hashable:
        assert isinstance(machine, KvStateMachine)
        reply = machine.get(key, machine.last_ts_ms, meta=True)
        if reply.get("error") == "not_found":
            return ABSENT
        value, version = reply["value"], reply["version"]
        assert isinstance(value, int) and isinstance(version, int), reply
        return Versioned(value, version)

    def read_many(self, machine: StateMachine, keys: tuple[str, ...]) -> Hashable:
        assert isinstance(machine, KvStateMachine)
        reply = machine.get_many(keys, machine.last_ts_ms)
        values = reply["values"]
        assert isinstance(values, dict), reply
        return tuple(values.get(k, ABSENT) for k in keys)

    def now_ms(self, machine: StateMachine) -> int:
        assert isinstance(machine, KvStateMachine)
        return machine.last_ts_ms

    def session_of(self, data: bytes) -> tuple[str, int] | None:
        envelope = decode_command(data)
        if envelope.client_id is None or envelope.seq is None:
            return None
        return envelope.client_id, envelope.seq

    def expiry_command(self, machine: StateMachine, now_ms: int) -> bytes | None:
        assert isinstance(machine, KvStateMachine)
        return machine.expiry_command(now_ms)

    def expired_leases(self, data: bytes) -> tuple[int, ...]:
        if _LEASE_EXPIRE not in data:
            return ()  # NB: cheap: most entries are not lease_expire
        command = decode_command(data).command
        return command.leases if isinstance(command, LeaseExpire) else ()


class RegisterAdapter:
    """The adapter for RegisterMachine (single keys, no TTL, no sessions)."""

    name = "register"
    kinds = _SINGLE_KEY_KINDS
    sessions = False
    ttl = False
    versions = False

    def new_machine(self) -> StateMachine:
        return RegisterMachine()

    def encode(
        self,
        kind: OpKind,
        key: str,
        args: tuple[Hashable, ...],
        keys: tuple[str, ...] = (),
        session: tuple[str, int] | None = None,
        min_seq: int | None = None,
    ) -> bytes:
        cmd: dict[str, object] = {"v": COMMAND_VERSION, "op": kind.value, "key": key}
        if kind is OpKind.PUT:
            cmd["value"] = args[0]
        elif kind is OpKind.PUT_IF:
            if args[0] is ABSENT:
                cmd["absent"] = True
            else:
                cmd["expected"] = args[0]
            cmd["value"] = args[1]
        elif kind is OpKind.DELETE_IF:
            cmd["expected"] = args[0]
        return json.dumps(cmd, sort_keys=True).encode()

    def decode(self, kind: OpKind, result: object) -> Hashable:
        assert isinstance(result, dict)
        if kind in _LEASE_REPLIES:
            return _decode_lease(kind, result)
        if kind is OpKind.DELETE:
            return bool(result["deleted"])
        if kind in (OpKind.PUT_IF, OpKind.DELETE_IF):
            return bool(result["ok"])
        return None

    def read(self, machine: StateMachine, key: str) -> Hashable:
        assert isinstance(machine, RegisterMachine)
        value = machine.get(key)
        return ABSENT if value is None else value

    def read_many(self, machine: StateMachine, keys: tuple[str, ...]) -> Hashable:
        return tuple(self.read(machine, k) for k in keys)

    def now_ms(self, machine: StateMachine) -> int:
        assert isinstance(machine, RegisterMachine)
        return machine.last_timestamp_ms

    def session_of(self, data: bytes) -> tuple[str, int] | None:
        return None

    def expiry_command(self, machine: StateMachine, now_ms: int) -> bytes | None:
        return None  # no TTLs, no leases

    def expired_leases(self, data: bytes) -> tuple[int, ...]:
        return ()
