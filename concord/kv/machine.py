"""
The deterministic key-value state machine: `apply(index, timestamp_ms, data) -> Applied`.

Deterministic: no clock, no randomness, and nothing observable (results, changes, state
hash, snapshots) depends on dict or set iteration order. Time is the leader's entry
timestamp; a key with 0 < expires_at_ms <= timestamp is expired for that entry, and for
reads at `now_ms`. Due keys stay stored until an `expire` command (or an overwrite)
removes them, so every physical change is published as a Change.

The store revision is the Raft index of the last entry that changed something; every
Change of one entry carries that revision.

Auth (concord.auth): the auth tables are SYSTEM records under "auth/" (tokens, roles,
tenants), so they are in snapshots, the state hash and shared memory like every record.
Once a token exists, every client write must carry a valid credential, checked here at
apply against the entry's timestamp (revocation and expiry hold on every replica from
the entry on), with the permission of its role and inside its tenant's keyspace; tenant
usage (keys, bytes) is derived from the records and checked against the tenant's quota
here too. A refused write changes nothing but applied_index. `expire` carries no
credential: only the leader proposes it.

Snapshot layout (format version 2; version 1 is still read), integers little-endian:

    offset  size  field
    0       4     magic b"CKVS"
    4       1     format version (2)
    5       8     state hash (uint64, `state_hash()` of the state it encodes)
    13      ...   msgpack array [applied_index, revision, last_ts_ms,
                                 user_records, system_records, sessions, leases]
                  record  = [key, value bin, flags, create_revision, mod_revision,
                             version, expires_at_ms]    (sorted by key)
                  session = [client_id, floor, [[seq, result map], ...], last_index,
                             last_ts_ms]                (least recently used first)
                  lease   = [lease_id, ttl_ms, expires_at_ms, [key, ...]] (by id)

Format 1 has no leases (an array of 6) and one result per session:
`[client_id, seq, result map, last_index, last_ts_ms]`. Format 2 may also hold auth
records (SYSTEM records under "auth/"), which a format-1 reader would take for data:
that is why a release with auth writes format 2 only.

The state hash is xxh3_64 over (applied_index, revision, last_ts_ms, record digest,
session and lease digest), where the record digest is the sum mod 2**64 of xxh3_64 over
each record's canonical encoding (kept incrementally, so state_hash() is O(1)); the
session and lease digest is the sum of the session table's and the lease table's. A
format-1 header hash is checked with format 1's session digest (one xxh3_64 per row).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections import deque
from dataclasses import dataclass, fields
from itertools import repeat
from types import MemberDescriptorType
from typing import Final, cast

import msgpack
import xxhash
from sortedcontainers import SortedList

from concord.auth.commands import AuthCommand, apply_auth
from concord.auth.rules import Perm, common_prefix
from concord.auth.state import AUTH_PREFIX, AuthState, Principal
from concord.auth.tenants import AFTER_TENANTS as _AFTER_TENANTS
from concord.auth.tenants import TENANT_MARK, Usage, tenant_of
from concord.bulk import gc_paused
from concord.errors import (
    ClientError,
    ConditionFailedError,
    CorruptionError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
)
from concord.kv.commands import (
    Command,
    Condition,
    CreateIndex,
    Delete,
    DeleteIf,
    DeleteMany,
    DeleteWhere,
    DropIndex,
    Envelope,
    Expire,
    Incr,
    LeaseExpire,
    Put,
    PutIf,
    PutMany,
    Touch,
    TouchMany,
    decode_command,
    expire_command,
    lease_expire_command,
)
from concord.kv.config import DEFAULT_CONFIG, KvConfig
from concord.kv.index import INDEX_PREFIX, IndexDef, IndexSet
from concord.kv.leases import LEASE_COMMANDS, LeaseTable, apply_lease_command
from concord.kv.query import KeySource, select
from concord.kv.reads import Reply, error_reply, serve_read, serve_request
from concord.kv.record import Change, ChangeType, KeyRecord, Space
from concord.kv.scope import record_bytes, scoped
from concord.kv.sessions import SessionTable, legacy_sessions_digest, session_from_row
from concord.kv.values import pack_value, record_value, values_equal

logger = logging.getLogger(__name__)

SNAPSHOT_MAGIC: Final = b"CKVS"
SNAPSHOT_VERSION: Final = 2
_SNAPSHOT_FIELDS: Final = {1: 6, 2: 7}  # format version -> length of the body array
_SNAPSHOT_HEADER = struct.Struct("<4sBQ")
_RECORD_HEADER = struct.Struct("<BqqqqqI")
_STATE = struct.Struct("<qqqQQ")
_DATA = struct.Struct("<qQQ")  # data_hash: revision, record digest, session digest
_MASK: Final = (1 << 64) - 1
#: Records restored per step of `restore_steps` (about 20 ms of CPU each).
RESTORE_ROWS_PER_STEP: Final = 16384
_UNLIMITED: Final = 1 << 62


@dataclass(frozen=True, slots=True)
class Applied:
    """
    The outcome of one applied entry.

    Attributes:
        result: the reply map for the client (msgpack-able; errors as
            {"error": code, "message": text}).
        changes: one Change per changed key, all with the entry's index as revision.
    """

    result: Reply
    changes: list[Change]


def record_digest(space: int, record: KeyRecord) -> int:
    """xxh3_64 of a record's canonical encoding (part of the state hash)."""
    key = record.key.encode("utf-8")
    head = _RECORD_HEADER.pack(
        space,
        record.flags,
        record.create_revision,
        record.mod_revision,
        record.version,
        record.expires_at_ms,
        len(key),
    )
    value = record.value
    if len(value) < 4096:  # one-shot hashing is faster than streaming for small values
        return xxhash.xxh3_64_intdigest(head + key + value)
    h = xxhash.xxh3_64(head + key)
    h.update(value)
    return h.intdigest()


class KvStateMachine:
    """
    The replicated key-value store of one node (or of the log writer's replica).

    Implements concord.raft.statemachine.StateMachine (apply, apply_noop, snapshot,
    restore, state_hash, applied_index) and the query engine's KeySource.
    """

    def __init__(self, config: KvConfig = DEFAULT_CONFIG) -> None:
        self.config = config.validate()
        self.applied_index = 0
        self.revision = 0
        self.last_ts_ms = 0
        self._user: dict[str, KeyRecord] = {}
        self._keys: SortedList = SortedList()
        self._system: dict[str, KeyRecord] = {}
        self._expiry: SortedList = SortedList()  # (expires_at_ms, key) of user keys
        self._indexes = IndexSet()
        self._sessions = SessionTable(config.max_sessions, config.session_ttl_ms)
        self._leases = LeaseTable()
        self._digest = 0  # sum of record digests mod 2**64
        # user key -> record_digest, to spare rehashing; may lack keys (restore() does
        # not fill it: _old_digest computes a missing one when its key changes).
        self._digests: dict[str, int] = {}
        self.auth = AuthState()
        self.usage: dict[str, Usage] = {}  # tenant -> stored keys and bytes

    # --- the state machine (concord.raft.statemachine) ------------------------------

    def apply(self, index: int, timestamp_ms: int, data: bytes) -> Applied:
        """
        Apply one committed NORMAL entry.

        A malformed command yields an error result and changes nothing but applied_index.
        Empty data (the leader's no-op) is `apply_noop` with an empty result.

        Raises:
            ValueError: `index` is not above `applied_index` (a caller bug).
        """
        if not data:
            self.apply_noop(index, timestamp_ms)
            return Applied({}, [])
        self._advance_check(index)
        try:
            envelope = decode_command(data, self.config)
        except ClientError as exc:
            result: Reply = error_reply(exc)
            changes: list[Change] = []
        else:
            result, changes = self._apply_envelope(envelope, index, timestamp_ms)
        self.applied_index = index
        self.last_ts_ms = timestamp_ms
        if changes:
            self.revision = index
        return Applied(result, changes)

    @property
    def last_timestamp_ms(self) -> int:
        """The timestamp of the last applied entry (kept in snapshots)."""
        return self.last_ts_ms

    def apply_noop(self, index: int, timestamp_ms: int) -> None:
        """Apply an empty entry (or a CONF_CHANGE): moves applied_index and time only."""
        self._advance_check(index)
        self.applied_index = index
        self.last_ts_ms = timestamp_ms

    def state_hash(self) -> int:
        """A 64-bit digest of the whole state; equal on replicas at the same index."""
        return xxhash.xxh3_64_intdigest(
            _STATE.pack(
                self.applied_index,
                self.revision,
                self.last_ts_ms,
                self._digest,
                self._table_digest(),
            )
        )

    def data_hash(self) -> int:
        """
        A 64-bit digest of the data alone: revision, every record, the session table.

        Unlike `state_hash` it leaves out the applied index and the last entry timestamp,
        so entries that change no data (a new leader's empty entry, a membership change)
        leave it as it was: "has any data changed" is `data_hash` before == after.
        """
        return xxhash.xxh3_64_intdigest(
            _DATA.pack(self.revision, self._digest, self._table_digest()))

    def _table_digest(self) -> int:
        """The session and lease tables' share of the state hash."""
        return (self._sessions.digest + self._leases.digest) & _MASK

    def snapshot(self) -> bytes:
        """The whole state in the versioned snapshot format (module docstring)."""
        packer = msgpack.Packer(use_bin_type=True)
        parts = [
            _SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, self.state_hash()),
            packer.pack_array_header(7),
            packer.pack(self.applied_index),
            packer.pack(self.revision),
            packer.pack(self.last_ts_ms),
            packer.pack_array_header(len(self._user)),
        ]
        for key in self._keys:
            parts.append(packer.pack(_record_row(self._user[key])))
        parts.append(packer.pack_array_header(len(self._system)))
        for key in sorted(self._system):
            parts.append(packer.pack(_record_row(self._system[key])))
        parts.append(packer.pack([s.to_list() for s in self._sessions]))
        parts.append(packer.pack(self._leases.rows()))
        return b"".join(parts)

    def restore(self, data: bytes) -> None:
        """
        Replace the whole state with a snapshot's.

        Raises:
            CorruptionError: bad magic, version, shape, or a state hash that does not
                match the header (the state is then empty).
        """
        for _ in self.restore_steps(data):
            pass

    def restore_steps(self, data: bytes, rows_per_step: int = RESTORE_ROWS_PER_STEP) -> Iterator[None]:
        """
        `restore(data)` in steps: each `next()` does a bounded amount of work (about
        `rows_per_step` records), so a caller with other duties (the log writer's replica)
        can interleave them. The state changes only in the last step; until the iterator
        is exhausted, the machine must not be used.

        Bulk build (1,000,000 keys restore in about 2 s of CPU): the per-key work is
        C-level maps and zips over columns of records, with the cyclic GC paused from the
        first step to the last (the millions of new objects hold no cycles; generation
        scans would otherwise dominate). NB: so a caller interleaving other work runs
        it with the GC paused too.

        Raises:
            CorruptionError: as `restore`.
        """
        if len(data) < _SNAPSHOT_HEADER.size:
            raise CorruptionError(f"kv snapshot is {len(data)} bytes, shorter than its header")
        magic, version, expected_hash = _SNAPSHOT_HEADER.unpack_from(data)
        if magic != SNAPSHOT_MAGIC:
            raise CorruptionError(f"kv snapshot has bad magic {magic!r}")
        if version not in _SNAPSHOT_FIELDS:
            raise CorruptionError(f"kv snapshot format version {version} is not supported")
        user: dict[str, KeyRecord] = {}
        expiry: list[tuple[int, str]] = []
        total = 0
        try:
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                        max_buffer_size=max(len(data), 1 << 20))
            unpacker.feed(memoryview(data)[_SNAPSHOT_HEADER.size:])
            if unpacker.read_array_header() != _SNAPSHOT_FIELDS[version]:
                raise ValueError(f"body must be an array of {_SNAPSHOT_FIELDS[version]}")
            applied_index, revision, last_ts_ms = unpacker.unpack(), unpacker.unpack(), unpacker.unpack()
            for value in (applied_index, revision, last_ts_ms):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError("bad position fields")
            remaining = user_count = unpacker.read_array_header()
            # NB: the GC stays paused for the whole build, between steps too: re-enabled
            # in between, each step's allocations would trigger collections traversing
            # every record built so far.
            with gc_paused():
                while remaining:
                    count = min(remaining, rows_per_step)
                    remaining -= count
                    unpack = unpacker.unpack
                    columns = _row_columns([unpack() for _ in range(count)])
                    chunk_keys = columns[0]
                    user.update(zip(chunk_keys, _bulk_records(columns)))
                    expires = columns[6]
                    if any(expires):
                        expiry += [(e, k) for e, k in zip(expires, chunk_keys) if e]
                    total += sum(_bulk_digests(Space.USER, columns))
                    yield
            systems, sessions = unpacker.unpack(), unpacker.unpack()
            if not isinstance(systems, list) or not isinstance(sessions, list):
                raise ValueError("system records and sessions must be lists")
            system_records = [_row_record(row) for row in systems]
            session_list = [session_from_row(row, version) for row in sessions]
            lease_rows = unpacker.unpack() if version >= 2 else []
            try:
                unpacker.unpack()
            except msgpack.OutOfData:
                pass
            else:
                raise ValueError("extra data after the body")
            if len(user) != user_count:
                raise ValueError("a user key appears twice")
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            self._reset()
            raise CorruptionError(f"kv snapshot body is malformed: {exc}") from exc
        self._reset()
        self.applied_index = applied_index
        self.revision = revision
        self.last_ts_ms = last_ts_ms
        self._user = user
        # NB: one sort of all keys (the snapshot lists them in order: linear), not a
        # SortedList.update per step (which inserts one by one once the list is big).
        self._keys = SortedList(user)
        self._expiry.update(expiry)
        for record in system_records:
            self._system[record.key] = record
            if record.key.startswith(AUTH_PREFIX):
                self.auth.set_record(record.key, record.value)
        self._recount_usage()
        total += sum(record_digest(Space.SYSTEM, r) for r in self._system.values())
        self._digest = total & _MASK
        self._sessions.load(session_list)
        try:
            self._leases.load(lease_rows)
        except ValueError as exc:
            self._reset()
            raise CorruptionError(f"kv snapshot leases are malformed: {exc}") from exc
        self._rebuild_indexes()
        actual = self.state_hash() if version >= 2 else xxhash.xxh3_64_intdigest(_STATE.pack(
            self.applied_index, self.revision, self.last_ts_ms, self._digest,
            legacy_sessions_digest(sessions)))
        if actual != expected_hash:
            self._reset()
            raise CorruptionError(
                f"kv snapshot state hash {actual:#x} does not match its header {expected_hash:#x}"
            )
        logger.info(
            "kv restored applied_index=%d revision=%d keys=%d",
            self.applied_index,
            self.revision,
            len(self._user),
        )

    # --- KeySource ------------------------------------------------------------------------

    def get_record(self, key: str) -> KeyRecord | None:
        """The stored user record of `key` (possibly due to expire), or None."""
        return self._user.get(key)

    def iter_keys(self, start: str | None = None, inclusive: bool = True) -> Iterator[str]:
        """User keys in ascending order from `start`. Do not apply while iterating."""
        if start is None:
            return iter(self._keys)
        it: Iterator[str] = self._keys.irange(minimum=start, inclusive=(inclusive, True))
        return it

    def index_set(self) -> IndexSet:
        """The secondary indexes."""
        return self._indexes

    # --- reads and leader helpers ---------------------------------------------------------

    def read(self, op: str, args: Mapping[str, object], now_ms: int) -> Reply:
        """
        Evaluate a read op (concord.kv.reads.READ_OPS) at cluster time `now_ms`.

        NB: reads are evaluated at max(now_ms, last_ts_ms): a key that an applied entry
        already treated as expired must never reappear to a read with an older clock
        (a new leader's clock may lag the entry timestamps of its predecessor).
        """
        return serve_read(self, op, args, max(now_ms, self.last_ts_ms), self.config)

    def read_request(self, request: Mapping[str, object], now_ms: int) -> Reply:
        """Evaluate a read request map ({"op": ..., args...}) like `read`."""
        if request.get("op") == "lease_list":  # leases live in the raft worker's machine only
            return {"leases": self.leases(now_ms)}
        return serve_request(self, request, max(now_ms, self.last_ts_ms), self.config)

    def get(self, key: str, now_ms: int, meta: bool = False) -> Reply:
        return self.read("get", {"key": key, "meta": meta}, now_ms)

    def get_many(self, keys: Sequence[str], now_ms: int) -> Reply:
        return self.read("get_many", {"keys": list(keys)}, now_ms)

    def get_with_ttl(self, key: str, now_ms: int) -> Reply:
        return self.read("get_with_ttl", {"key": key}, now_ms)

    def ttl(self, key: str, now_ms: int) -> Reply:
        return self.read("ttl", {"key": key}, now_ms)

    def get_all(self, now_ms: int, limit: int | None = None, after: str | None = None) -> Reply:
        return self.read("get_all", {"limit": limit, "after": after}, now_ms)

    def keys(self, query: Mapping[str, object], now_ms: int) -> Reply:
        return self.read("keys", query, now_ms)

    def query(self, query: Mapping[str, object], now_ms: int) -> Reply:
        return self.read("query", query, now_ms)

    def count(self, query: Mapping[str, object], now_ms: int) -> Reply:
        return self.read("count", query, now_ms)

    def read_time(self, now_ms: int) -> int:
        """The cluster time reads at `now_ms` are evaluated at: max(now_ms, last_ts_ms)."""
        return max(now_ms, self.last_ts_ms)

    def due_expirations(self, now_ms: int, limit: int) -> list[str]:
        """
        Keys due to expire at `now_ms` (expires_at_ms <= now_ms), soonest first, at most
        `limit`: the leader proposes `expire_command(keys)` for them.
        """
        out: list[str] = []
        for expires_at_ms, key in self._expiry:
            if expires_at_ms > now_ms or len(out) >= limit:
                break
            out.append(key)
        return out

    def expiry_command(self, now_ms: int, limit: int = 500) -> bytes | None:
        """
        The `expire` command the leader should propose at `now_ms`, or None if no key is
        due. Applying it deletes only keys still due at that entry's timestamp, so a
        duplicate or late proposal is harmless.
        """
        keys = self.due_expirations(now_ms, limit)
        if keys:
            return expire_command(keys)
        leases = self._leases.due(now_ms, limit)
        return lease_expire_command(leases) if leases else None

    def leases(self, now_ms: int) -> list[dict[str, object]]:
        """The live leases at cluster time `now_ms` (the `lease_list` op)."""
        return self._leases.listing(max(now_ms, self.last_ts_ms))

    def records(self) -> Iterator[KeyRecord]:
        """Every stored user record in key order (due ones included)."""
        return map(self._user.__getitem__, self._keys)

    def system_records(self) -> list[KeyRecord]:
        """Every SYSTEM record in key order."""
        return [self._system[k] for k in sorted(self._system)]

    def __len__(self) -> int:
        return len(self._user)

    def verify_digest(self) -> bool:
        """Whether the incremental record digest equals one recomputed from scratch."""
        return self._digest == self._full_digest()

    # --- apply internals ------------------------------------------------------------------

    def _advance_check(self, index: int) -> None:
        if index <= self.applied_index:
            raise ValueError(f"entry index {index} is not above applied index {self.applied_index}")

    def _apply_envelope(
        self, envelope: Envelope, index: int, ts: int
    ) -> tuple[Reply, list[Change]]:
        client_id, seq = envelope.client_id, envelope.seq
        try:
            principal = self._admit(envelope, ts)
        except ClientError as exc:
            return error_reply(exc), []
        if client_id is None or seq is None:
            return self._execute(envelope.command, index, ts, principal)
        min_seq = seq if envelope.min_seq is None else envelope.min_seq
        answer = self._sessions.lookup(client_id, seq, min_seq)
        if answer is not None:
            return answer, []
        result, changes = self._execute(envelope.command, index, ts, principal)
        self._sessions.record(client_id, seq, min_seq, result, index, ts)
        self._sessions.evict(ts)
        return result, changes

    def _admit(self, envelope: Envelope, ts: int) -> Principal | None:
        """
        The principal of a command at entry time `ts`, checked for what the command does.

        Raises:
            UnauthorizedError, ForbiddenError, QuotaExceededError.
        """
        command = envelope.command
        if isinstance(command, (Expire, LeaseExpire)):
            return None  # proposed by the leader only (never a client op)
        if isinstance(command, AuthCommand) and command.op == "auth_bootstrap":
            return None  # apply_auth refuses it once a token exists
        if envelope.auth is None and not self.auth.active:
            return None
        principal = self.auth.authenticate(envelope.auth, ts)
        if isinstance(command, AuthCommand):
            principal.check_cluster_admin(command.op)
            return principal
        if isinstance(command, DeleteWhere):
            query = command.query
            within = common_prefix(query.lo, query.hi) if query.lo and query.hi else ""
            prefix = query.prefix or ""
            principal.check_prefix(within if within.startswith(prefix) else prefix, Perm.WRITE)
        elif isinstance(command, (CreateIndex, DropIndex)):
            if principal.tenant is not None:
                raise ForbiddenError("tenant tokens cannot use secondary indexes")
            principal.check_prefix("", Perm.WRITE)
        elif isinstance(command, LEASE_COMMANDS):
            # A lease's expiry or revocation deletes whatever keys hold it: only a token
            # that may write every key may manage leases (never a tenant's).
            if principal.tenant is not None:
                raise ForbiddenError("tenant tokens cannot use leases")
            principal.check_prefix("", Perm.WRITE)
        else:
            keys = _command_keys(command)
            principal.check_stored_keys(keys, Perm.WRITE)
            if principal.tenant is not None:
                self._check_quota(principal.tenant, command, ts)
        return principal

    def _check_quota(self, tenant: str, command: Command, ts: int) -> None:
        """Raise QuotaExceededError if `command` would take `tenant` over its quota."""
        quota = self.auth.tenants.get(tenant)
        if quota is None:
            raise ForbiddenError(f"tenant {tenant!r} does not exist")
        if not (quota.max_keys or quota.max_bytes):
            return
        puts = (command.items if isinstance(command, PutMany)
                else (command.put,) if isinstance(command, PutIf)
                else (command,) if isinstance(command, Put)
                else (Put(command.key, pack_value(command.delta), 0, command.ttl_ms),)
                if isinstance(command, Incr) else ())
        new_keys = new_bytes = 0
        for put in puts:
            old = self._user.get(put.key)
            size = len(put.key.encode("utf-8")) + len(put.value)
            new_keys += old is None
            new_bytes += size - (0 if old is None else record_bytes(old))
        usage = self.usage.get(tenant, Usage())
        if quota.max_keys and new_keys > 0 and usage.keys + new_keys > quota.max_keys:
            raise QuotaExceededError(f"tenant {tenant!r} would hold {usage.keys + new_keys} keys, "
                                     f"over its quota of {quota.max_keys}")
        if quota.max_bytes and new_bytes > 0 and usage.bytes + new_bytes > quota.max_bytes:
            raise QuotaExceededError(f"tenant {tenant!r} would hold {usage.bytes + new_bytes} "
                                     f"bytes, over its quota of {quota.max_bytes}")

    def _execute(
        self, command: Command, index: int, ts: int, principal: Principal | None = None
    ) -> tuple[Reply, list[Change]]:
        result, changes = self._execute_command(command, index, ts, principal)
        if len(self._leases) and changes:
            self._sync_leases(command, changes)
        return result, changes

    def _sync_leases(self, command: Command, changes: list[Change]) -> None:
        """Attach a put's key to its lease; detach keys replaced, deleted or expired."""
        put = command if isinstance(command, Put) else command.put if isinstance(command, PutIf) else None
        for change in changes:
            if change.space != Space.USER or change.type is ChangeType.TOUCH:
                continue
            if isinstance(command, Incr):
                continue  # a counter keeps its lease
            if change.type is ChangeType.PUT:
                self._leases.attach(change.key, put.lease if put is not None else 0)
            else:
                self._leases.detach(change.key)

    def _execute_command(
        self, command: Command, index: int, ts: int, principal: Principal | None = None
    ) -> tuple[Reply, list[Change]]:
        try:
            if isinstance(command, Put):
                if command.lease:
                    self._leases.live(command.lease, ts)
                return self._put(command, index, ts)
            if isinstance(command, Delete):
                return self._delete_keys((command.key,), index, ts, single=True)
            if isinstance(command, Touch):
                return self._touch((command,), index, ts)
            if isinstance(command, PutMany):
                return self._put_many(command, index, ts)
            if isinstance(command, DeleteMany):
                return self._delete_keys(command.keys, index, ts, single=False)
            if isinstance(command, TouchMany):
                return self._touch(command.items, index, ts)
            if isinstance(command, PutIf):
                self._check(command.cond, command.put.key, ts)
                if command.put.lease:
                    self._leases.live(command.put.lease, ts)
                return self._put(command.put, index, ts)
            if isinstance(command, Incr):
                return self._incr(command, index, ts)
            if isinstance(command, LEASE_COMMANDS):
                result, changes = apply_lease_command(self._leases, command, index, ts,
                                                      self._lease_delete)
                result["revision"] = index if changes else self.revision
                return result, changes
            if isinstance(command, DeleteIf):
                self._check(command.cond, command.key, ts)
                return self._delete_keys((command.key,), index, ts, single=True)
            if isinstance(command, Expire):
                return self._expire(command, index, ts)
            if isinstance(command, DeleteWhere):
                source = scoped(principal, self)
                rows, _ = select(source, command.query, ts, _UNLIMITED)
                keys = [record.key for record, _ in rows]
                if principal is not None:
                    keys = list(principal.stored_keys(keys))
                result, changes = self._delete_keys(keys, index, ts, single=False)
                return result, changes
            if isinstance(command, CreateIndex):
                return self._create_index(command, index, ts)
            if isinstance(command, AuthCommand):
                return self._apply_auth(command, principal, index, ts)
            return self._drop_index(command, index, ts)
        except ClientError as exc:
            return error_reply(exc), []

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

    # --- storage primitives (every mutation goes through these) ---------------------------

    def _store(self, record: KeyRecord, old: KeyRecord | None, same_value: bool = False) -> None:
        """Store a user record over `old` (the key's stored record, due or not, or None)."""
        key = record.key
        digest = self._digest
        if old is None:
            self._keys.add(key)
        else:
            digest -= self._old_digest(key, old)
            if old.expires_at_ms:
                self._expiry.remove((old.expires_at_ms, key))
        if key[0] == TENANT_MARK:
            if old is not None:
                self._count_usage(old, -1)
            self._count_usage(record, 1)
        self._user[key] = record
        new_digest = record_digest(Space.USER, record)
        self._digests[key] = new_digest
        self._digest = (digest + new_digest) & _MASK
        if record.expires_at_ms:
            self._expiry.add((record.expires_at_ms, key))
        if self._indexes and not same_value:
            self._indexes.update(key, record)

    def _remove(self, key: str) -> None:
        old = self._user.pop(key)
        self._keys.remove(key)
        if key[0] == TENANT_MARK:
            self._count_usage(old, -1)
        if old.expires_at_ms:
            self._expiry.remove((old.expires_at_ms, key))
        self._digest = (self._digest - self._old_digest(key, old)) & _MASK
        if self._indexes:
            self._indexes.update(key, None)

    def _old_digest(self, key: str, old: KeyRecord) -> int:
        """The digest of `key`'s stored record `old`, dropped from the cache."""
        cached = self._digests.pop(key, None)
        return record_digest(Space.USER, old) if cached is None else cached

    def _store_system(self, record: KeyRecord) -> None:
        old = self._system.get(record.key)
        digest = self._digest
        if old is not None:
            digest -= record_digest(Space.SYSTEM, old)
        self._system[record.key] = record
        self._digest = (digest + record_digest(Space.SYSTEM, record)) & _MASK
        if record.key.startswith(AUTH_PREFIX):
            self.auth.set_record(record.key, record.value)

    def _remove_system(self, key: str) -> None:
        old = self._system.pop(key)
        self._digest = (self._digest - record_digest(Space.SYSTEM, old)) & _MASK
        if key.startswith(AUTH_PREFIX):
            self.auth.set_record(key, None)

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

    def _count_usage(self, record: KeyRecord, sign: int) -> None:
        tenant = tenant_of(record.key)
        if tenant is not None:
            usage = self.usage.get(tenant, Usage()).plus(sign, sign * record_bytes(record))
            if usage.keys:
                self.usage[tenant] = usage
            else:
                self.usage.pop(tenant, None)

    def _recount_usage(self) -> None:
        self.usage.clear()
        for key in self._keys.irange(minimum=TENANT_MARK, maximum=_AFTER_TENANTS,
                                     inclusive=(True, False)):
            self._count_usage(self._user[key], 1)

    def _full_digest(self) -> int:
        total = 0
        for key, record in self._user.items():
            digest = record_digest(Space.USER, record)
            if self._digests.get(key, digest) != digest:
                return -1  # the per-key cache is wrong: never equal to a real digest
            total += digest
        for record in self._system.values():
            total += record_digest(Space.SYSTEM, record)
        return total & _MASK

    def _reset(self) -> None:
        self.applied_index = 0
        self.revision = 0
        self.last_ts_ms = 0
        self._user.clear()
        self._digests.clear()
        self._keys.clear()
        self._system.clear()
        self._expiry.clear()
        self._indexes.clear()
        self._sessions.clear()
        self._leases.clear()
        self._digest = 0
        self.auth.clear()
        self.usage.clear()

    def _rebuild_indexes(self) -> None:
        self._indexes.clear()
        for record in self.system_records():
            if not record.key.startswith(INDEX_PREFIX):
                continue  # other system records (auth, tenants) are not indexes
            try:
                definition = IndexDef.decode(record.key, record.value)
            except InvalidRequestError:
                logger.warning("kv skipped bad index definition key=%s", record.key)
                continue
            self._indexes.create(definition, self.records())


def _command_keys(command: Command) -> list[str]:
    """The stored keys a key-naming write command changes (or reads, for its condition)."""
    if isinstance(command, (Put, Delete, Touch, DeleteIf, Incr)):
        return [command.key]
    if isinstance(command, PutIf):
        return [command.put.key]
    if isinstance(command, (PutMany, TouchMany)):
        return [item.key for item in command.items]
    if isinstance(command, DeleteMany):
        return list(command.keys)
    return []


def _record_row(record: KeyRecord) -> list[object]:
    return [
        record.key,
        record.value,
        record.flags,
        record.create_revision,
        record.mod_revision,
        record.version,
        record.expires_at_ms,
    ]


_Columns = tuple[
    list[str], list[bytes], list[int], list[int], list[int], list[int], list[int]
]


def _row_columns(rows: object) -> _Columns:
    """
    The snapshot's record rows as seven columns (key, value, flags, create_revision,
    mod_revision, version, expires_at_ms), checked in bulk as `_row_record` checks one.

    Raises:
        ValueError: a row is not a list of 7, or a field has the wrong type.
    """
    if type(rows) is not list:
        raise ValueError("records must be a list")
    if not rows:
        return [], [], [], [], [], [], []
    if set(map(type, rows)) != {list} or set(map(len, rows)) != {7}:
        raise ValueError("record row must be a list of 7")
    columns = tuple(map(list, zip(*rows)))
    keys, values, *numbers = columns
    if set(map(type, keys)) != {str} or set(map(type, values)) != {bytes}:
        raise ValueError("record key must be str and value bin")
    for column in numbers:
        if set(map(type, column)) != {int}:  # NB: type(True) is bool, not int
            raise ValueError("record numbers must be integers")
    return cast(_Columns, columns)


#: KeyRecord's slot descriptors, in field order.
_RECORD_SLOTS: Final[tuple[MemberDescriptorType, ...]] = tuple(
    cast(MemberDescriptorType, getattr(KeyRecord, f.name)) for f in fields(KeyRecord)
)


def _bulk_records(columns: _Columns) -> list[KeyRecord]:
    """
    KeyRecords from columns in field order, built by C-level maps: one object.__new__
    per record, then each slot descriptor's __set__ over a whole column (a frozen
    dataclass's __init__ is Python code, twice as slow for millions of records).
    """
    records: list[KeyRecord] = list(map(object.__new__, repeat(KeyRecord, len(columns[0]))))
    for slot, column in zip(_RECORD_SLOTS, cast(tuple[list[object], ...], columns)):
        deque(map(slot.__set__, records, column), maxlen=0)
    return records


def _bulk_digests(space: int, columns: _Columns) -> list[int]:
    """`record_digest` of every row of `columns`, computed by C-level maps."""
    keys, values, flags, creates, mods, versions, expires = columns
    encoded = list(map(str.encode, keys))
    heads = map(
        _RECORD_HEADER.pack, repeat(space), flags, creates, mods, versions, expires,
        map(len, encoded),
    )
    # NB: xxh3_64 of the concatenation, as record_digest computes it (one-shot or not).
    return list(map(xxhash.xxh3_64_intdigest, map(b"".join, zip(heads, encoded, values))))


def _row_record(row: object) -> KeyRecord:
    if not isinstance(row, list) or len(row) != 7:
        raise ValueError("record row must be a list of 7")
    key, value, flags, create, mod, version, expires = row
    if not isinstance(key, str) or not isinstance(value, bytes):
        raise ValueError("record key must be str and value bin")
    for number in (flags, create, mod, version, expires):
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValueError("record numbers must be integers")
    return KeyRecord(key, value, flags, create, mod, version, expires)


def _is_key_source(machine: KvStateMachine) -> KeySource:
    """Static check (mypy): KvStateMachine is a KeySource for the query engine."""
    return machine
