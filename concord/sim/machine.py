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

from concord.kv import KvStateMachine, encode_command
from concord.node.driver import StateMachine
from concord.sim.linearizability import ABSENT, OpKind

__all__ = ["Adapter", "KvAdapter", "RegisterAdapter", "RegisterApplied", "RegisterMachine"]

COMMAND_VERSION = 1


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


class Adapter(Protocol):
    """Turns client operations into commands, replies into results, and reads keys."""

    name: str

    def new_machine(self) -> StateMachine: ...

    def encode(self, kind: OpKind, key: str, args: tuple[Hashable, ...]) -> bytes: ...

    def decode(self, kind: OpKind, result: object) -> Hashable: ...

    def read(self, machine: StateMachine, key: str) -> Hashable: ...


class KvAdapter:
    """The adapter for the real state machine, concord.kv (values are ints)."""

    name = "kv"

    def new_machine(self) -> StateMachine:
        return KvStateMachine()

    def encode(self, kind: OpKind, key: str, args: tuple[Hashable, ...]) -> bytes:
        if kind is OpKind.PUT:
            return encode_command("put", {"key": key, "value": args[0]})
        if kind is OpKind.DELETE:
            return encode_command("delete", {"key": key})
        if kind is OpKind.PUT_IF:
            expected, value = args
            if expected is ABSENT:
                return encode_command("put_if", {"key": key, "value": value, "absent": True})
            return encode_command("put_if", {"key": key, "value": value, "expected": expected})
        if kind is OpKind.DELETE_IF:
            return encode_command("delete_if", {"key": key, "expected": args[0]})
        raise ValueError(f"{kind} is not a write")

    def decode(self, kind: OpKind, result: object) -> Hashable:
        assert isinstance(result, dict), result
        error = result.get("error")
        if kind in (OpKind.PUT_IF, OpKind.DELETE_IF):
            if error == "condition_failed":
                return False
            assert error is None, result
            return True
        assert error is None, result
        if kind is OpKind.DELETE:
            return bool(result["deleted"])
        return None

    def read(self, machine: StateMachine, key: str) -> Hashable:
        assert isinstance(machine, KvStateMachine)
        reply = machine.get(key, machine.last_ts_ms)
        if reply.get("error") == "not_found":
            return ABSENT
        value = reply["value"]
        assert isinstance(value, int), reply
        return value


class RegisterAdapter:
    """The adapter for RegisterMachine."""

    name = "register"

    def new_machine(self) -> StateMachine:
        return RegisterMachine()

    def encode(self, kind: OpKind, key: str, args: tuple[Hashable, ...]) -> bytes:
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
        if kind is OpKind.DELETE:
            return bool(result["deleted"])
        if kind in (OpKind.PUT_IF, OpKind.DELETE_IF):
            return bool(result["ok"])
        return None

    def read(self, machine: StateMachine, key: str) -> Hashable:
        assert isinstance(machine, RegisterMachine)
        value = machine.get(key)
        return ABSENT if value is None else value
