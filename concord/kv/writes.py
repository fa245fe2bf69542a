"""
The kv write commands' effects: put, put_many, incr, delete, touch, expire, condition
checks, index creation and removal, lease deletions and auth table writes. Each takes
the decoded command, the entry's index and timestamp, and returns the client's reply
and one Change per changed key; failures raise a ClientError before anything changes.

`WriteCommands` is a base class of concord.kv.machine.KvStateMachine (which decodes,
admits and dispatches each entry); it changes state only through RecordStore's
primitives. Deterministic: time is the entry's timestamp. No IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from concord.auth.commands import AuthCommand, apply_auth
from concord.auth.state import Principal
from concord.errors import ConditionFailedError, InvalidRequestError, NotFoundError
from concord.kv.commands import (
    Condition,
    CreateIndex,
    DropIndex,
    Expire,
    Incr,
    Put,
    PutMany,
    Touch,
)
from concord.kv.index import IndexDef
from concord.kv.reads import Reply
from concord.kv.record import Change, ChangeType, KeyRecord, Space
from concord.kv.store import RecordStore
from concord.kv.values import pack_value, record_value, values_equal


class WriteCommands(RecordStore):
    """The write commands over the record store (`revision` set by KvStateMachine)."""

    revision: int

    def _incr(self, command: Incr, index: int, ts: int) -> tuple[Reply, list[Change]]:
        """Add `delta` to an integer value (absent: 0); a new key gets the ttl, an old one keeps its expiry."""
        key = command.key
        old = self._live(key, ts)
        current = 0
        if old is not None:
            try:
                stored = record_value(old)
            except ValueError as exc:
                raise InvalidRequestError(f"stored value of key {key!r} does not decode") from exc
            if isinstance(stored, bool) or not isinstance(stored, int):
                raise InvalidRequestError(
                    f"key {key!r} holds a {type(stored).__name__}, not an integer")
            current = stored
        value = current + command.delta
        if not -(1 << 63) <= value < (1 << 63):
            raise InvalidRequestError(f"incr of key {key!r} to {value} leaves the signed 64-bit range")
        if old is None:
            record = KeyRecord(key, pack_value(value), 0, index, index, 1,
                               ts + command.ttl_ms if command.ttl_ms else 0)
        else:
            record = KeyRecord(key, pack_value(value), 0, old.create_revision, index,
                               old.version + 1, old.expires_at_ms)
        self._store(record, self._user.get(key))
        change = Change(ChangeType.PUT, Space.USER, key, record, index, ts)
        return {"value": value, "revision": index}, [change]

    def _lease_delete(self, keys: Sequence[str], index: int, ts: int, kind: ChangeType) -> list[Change]:
        """Delete a lease's live keys (revoke: DELETE changes, expiry: EXPIRE changes)."""
        changes = []
        for key in keys:
            if self._live(key, ts) is None:
                continue
            self._remove(key)
            changes.append(Change(kind, Space.USER, key, None, index, ts))
        return changes

    def _live(self, key: str, ts: int) -> KeyRecord | None:
        record = self._user.get(key)
        if record is None or (record.expires_at_ms and record.expires_at_ms <= ts):
            return None
        return record

    def _new_record(self, put: Put, index: int, ts: int) -> KeyRecord:
        old = self._live(put.key, ts)
        return KeyRecord(
            put.key,
            put.value,
            put.flags,
            index if old is None else old.create_revision,
            index,
            1 if old is None else old.version + 1,
            ts + put.ttl_ms if put.ttl_ms else 0,
        )

    def _put(self, put: Put, index: int, ts: int) -> tuple[Reply, list[Change]]:
        # The write hot path: one dict lookup serves both the new record and the store.
        key = put.key
        old = self._user.get(key)
        if old is not None and (old.expires_at_ms == 0 or old.expires_at_ms > ts):
            create_revision, version = old.create_revision, old.version + 1
        else:
            create_revision, version = index, 1
        expires_at_ms = ts + put.ttl_ms if put.ttl_ms else 0
        record = KeyRecord(
            key, put.value, put.flags, create_revision, index, version, expires_at_ms
        )
        self._store(record, old)
        return {"revision": index}, [Change(ChangeType.PUT, Space.USER, key, record, index, ts)]

    def _put_many(self, command: PutMany, index: int, ts: int) -> tuple[Reply, list[Change]]:
        # Invariant: decode_command validated every item, so nothing below can fail.
        records = [self._new_record(put, index, ts) for put in command.items]
        changes = []
        for record in records:
            self._store(record, self._user.get(record.key))
            changes.append(Change(ChangeType.PUT, Space.USER, record.key, record, index, ts))
        return {"revision": index if changes else self.revision}, changes

    def _delete_keys(
        self, keys: Iterable[str], index: int, ts: int, single: bool
    ) -> tuple[Reply, list[Change]]:
        changes = []
        for key in keys:
            if self._live(key, ts) is None:
                continue  # absent, due, or a duplicate already deleted
            self._remove(key)
            changes.append(Change(ChangeType.DELETE, Space.USER, key, None, index, ts))
        revision = index if changes else self.revision
        if single:
            return {"deleted": bool(changes), "revision": revision}, changes
        return {"deleted": len(changes), "revision": revision}, changes

    def _touch(
        self, touches: Sequence[Touch], index: int, ts: int
    ) -> tuple[Reply, list[Change]]:
        olds = []
        for touch in touches:
            old = self._live(touch.key, ts)
            if old is None:
                raise NotFoundError(f"key {touch.key!r} not found")
            olds.append(old)
        changes = []
        for touch, old in zip(touches, olds):
            record = KeyRecord(
                old.key,
                old.value,
                old.flags,
                old.create_revision,
                index,
                old.version,
                ts + touch.ttl_ms if touch.ttl_ms else 0,
            )
            self._store(record, old, same_value=True)
            changes.append(Change(ChangeType.TOUCH, Space.USER, record.key, record, index, ts))
        return {"revision": index if changes else self.revision}, changes

    def _check(self, cond: Condition, key: str, ts: int) -> None:
        live = self._live(key, ts)
        if cond.kind == "absent":
            if live is not None:
                raise ConditionFailedError(f"key {key!r} exists")
            return
        if cond.kind in ("version", "mod_revision"):
            actual = 0 if live is None else getattr(live, cond.kind)
            if actual != cond.operand:
                raise ConditionFailedError(
                    f"key {key!r} has {cond.kind} {actual}, expected {cond.operand}"
                )
            return
        if live is None:
            raise ConditionFailedError(f"key {key!r} does not exist")
        try:
            current = record_value(live)
        except ValueError as exc:
            raise ConditionFailedError(f"stored value of key {key!r} does not decode") from exc
        if not values_equal(current, cond.operand):
            raise ConditionFailedError(f"key {key!r} does not hold the expected value")

    def _expire(self, command: Expire, index: int, ts: int) -> tuple[Reply, list[Change]]:
        changes = []
        for key in command.keys:
            record = self._user.get(key)
            if record is None or not record.expires_at_ms or record.expires_at_ms > ts:
                continue
            self._remove(key)
            changes.append(Change(ChangeType.EXPIRE, Space.USER, key, None, index, ts))
        revision = index if changes else self.revision
        return {"expired": len(changes), "revision": revision}, changes

    def _create_index(
        self, command: CreateIndex, index: int, ts: int
    ) -> tuple[Reply, list[Change]]:
        existing = self._indexes.get(command.name)
        if existing is not None:
            if existing.definition.path != command.path:
                raise InvalidRequestError(
                    f"index {command.name!r} already exists on field {existing.definition.field!r}"
                )
            return {"created": False, "revision": self.revision}, []
        definition = IndexDef(command.name, command.field, command.path)
        record = KeyRecord(definition.system_key, definition.encode(), 0, index, index, 1, 0)
        self._store_system(record)
        self._indexes.create(definition, self.records())
        change = Change(ChangeType.PUT, Space.SYSTEM, record.key, record, index, ts)
        return {"created": True, "revision": index}, [change]

    def _drop_index(self, command: DropIndex, index: int, ts: int) -> tuple[Reply, list[Change]]:
        if not self._indexes.drop(command.name):
            return {"dropped": False, "revision": self.revision}, []
        key = IndexDef(command.name, "", ()).system_key
        self._remove_system(key)
        change = Change(ChangeType.DELETE, Space.SYSTEM, key, None, index, ts)
        return {"dropped": True, "revision": index}, [change]

    def _apply_auth(
        self, command: AuthCommand, principal: Principal | None, index: int, ts: int
    ) -> tuple[Reply, list[Change]]:
        result, records = apply_auth(self.auth, command, principal, self.usage, ts)
        changes = []
        for key, value in records:
            if value is None:
                self._remove_system(key)
                changes.append(Change(ChangeType.DELETE, Space.SYSTEM, key, None, index, ts))
                continue
            old = self._system.get(key)
            record = KeyRecord(key, value, 0, index if old is None else old.create_revision,
                               index, 1 if old is None else old.version + 1, 0)
            self._store_system(record)
            changes.append(Change(ChangeType.PUT, Space.SYSTEM, key, record, index, ts))
        result["revision"] = index if changes else self.revision
        return result, changes
