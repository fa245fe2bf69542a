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
Once a token exists, every client write must carry a valid credential, checked at apply
against the entry's timestamp, with the permission of its role, inside its tenant's
keyspace and quota (concord.kv.admission). A refused write changes nothing but
applied_index. `expire` carries no credential: only the leader proposes it.

Snapshots (concord.kv.snapshot; format: docs/formats/kv.md "Snapshot format"): the
state hash is xxh3_64 over (applied_index, revision, last_ts_ms, record digest, session
and lease digest), where the record digest is the sum mod 2**64 of each record's
`record_digest` (kept incrementally, so state_hash() is O(1)); the session and lease
digest is the sum of the session table's and the lease table's. A format-1 header hash
is checked with format 1's session digest (one xxh3_64 per row).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

import msgpack
import xxhash
from sortedcontainers import SortedList

from concord.auth.commands import AuthCommand
from concord.auth.state import AUTH_PREFIX, AuthState, Principal
from concord.auth.tenants import Usage
from concord.errors import ClientError, CorruptionError, InvalidRequestError
from concord.kv.commands import (
    Command,
    CreateIndex,
    Delete,
    DeleteIf,
    DeleteMany,
    DeleteWhere,
    Envelope,
    Expire,
    Incr,
    Put,
    PutIf,
    PutMany,
    Touch,
    TouchMany,
    decode_command,
    expire_command,
    lease_expire_command,
)
from concord.kv.admission import admit
from concord.kv.config import DEFAULT_CONFIG, KvConfig
from concord.kv.index import INDEX_PREFIX, IndexDef, IndexSet
from concord.kv.leases import LEASE_COMMANDS, LeaseTable, apply_lease_command
from concord.kv.query import KeySource, select
from concord.kv.reads import Reply, error_reply, serve_read, serve_request
from concord.kv.record import Change, ChangeType, KeyRecord, Space, hot_record
from concord.kv.scope import scoped
from concord.kv.sessions import SessionTable, legacy_sessions_digest
from concord.kv.snapshot import (  # the format's names re-exported: their old home
    _SNAPSHOT_FIELDS as _SNAPSHOT_FIELDS,
    _SNAPSHOT_HEADER as _SNAPSHOT_HEADER,
    SNAPSHOT_MAGIC as SNAPSHOT_MAGIC,
    SNAPSHOT_VERSION as SNAPSHOT_VERSION,
    encode_snapshot,
    read_body,
    read_header,
    record_digest as record_digest,
)
from concord.kv.store import _MASK
from concord.kv.writes import WriteCommands

logger = logging.getLogger(__name__)

_STATE = struct.Struct("<qqqQQ")

#: The state hash's inputs: applied index, revision, last entry timestamp, record digest,
#: session and lease tables' digest (KvStateMachine.hash_point).
HashPoint = tuple[int, int, int, int, int]


def hash_of_point(point: HashPoint) -> int:
    """The state hash of a `KvStateMachine.hash_point()`."""
    return xxhash.xxh3_64_intdigest(_STATE.pack(*point))
_DATA = struct.Struct("<qQQ")  # data_hash: revision, record digest, session digest
#: Records restored per step of `restore_steps` (about 20 ms of CPU each).
RESTORE_ROWS_PER_STEP: Final = 16384
_UNLIMITED: Final = 1 << 62


@hot_record
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


class KvStateMachine(WriteCommands):
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
        return hash_of_point(self.hash_point())

    def hash_point(self) -> HashPoint:
        """
        What `state_hash` digests, as it is now: `hash_of_point` of it is the hash. Half
        the cost of the hash itself, for a caller that keeps many and digests few.
        """
        return (self.applied_index, self.revision, self.last_ts_ms, self._digest,
                (self._sessions.digest + self._leases.digest) & _MASK)

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
        """The whole state in the versioned snapshot format (concord.kv.snapshot)."""
        return encode_snapshot(
            self.state_hash(),
            (self.applied_index, self.revision, self.last_ts_ms),
            self.records(),
            len(self._user),
            (self._system[key] for key in sorted(self._system)),
            len(self._system),
            [s.to_list() for s in self._sessions],
            self._leases.rows(),
        )

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
        `rows_per_step` records; snapshot format 3: one chunk, 16,384 records), so a caller with other duties can interleave them. The state changes only in the last step; until the iterator
        is exhausted, the machine must not be used.

        Bulk build (1,000,000 keys restore in about 2 s of CPU): the per-key work is
        C-level maps and zips over columns of records, with the cyclic GC paused from the
        first step to the last (the millions of new objects hold no cycles; generation
        scans would otherwise dominate). NB: so a caller interleaving other work runs
        it with the GC paused too.

        Raises:
            CorruptionError: as `restore`.
        """
        version, expected_hash = read_header(data)
        try:
            body = yield from read_body(data, version, rows_per_step)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            self._reset()
            raise CorruptionError(f"kv snapshot body is malformed: {exc}") from exc
        self._reset()
        self.applied_index = body.applied_index
        self.revision = body.revision
        self.last_ts_ms = body.last_ts_ms
        self._user = user = body.user
        # NB: one sort of all keys (the snapshot lists them in order: linear), not a
        # SortedList.update per step (which inserts one by one once the list is big).
        self._keys = SortedList(user)
        self._expiry.update(body.expiry)
        for record in body.system_records:
            self._system[record.key] = record
            if record.key.startswith(AUTH_PREFIX):
                self.auth.set_record(record.key, record.value)
        self._recount_usage()
        total = body.user_digest + sum(record_digest(Space.SYSTEM, r) for r in self._system.values())
        self._digest = total & _MASK
        self._sessions.load(body.sessions)
        try:
            self._leases.load(body.lease_rows)
        except ValueError as exc:
            self._reset()
            raise CorruptionError(f"kv snapshot leases are malformed: {exc}") from exc
        self._rebuild_indexes()
        actual = self.state_hash() if version >= 2 else xxhash.xxh3_64_intdigest(_STATE.pack(
            self.applied_index, self.revision, self.last_ts_ms, self._digest,
            legacy_sessions_digest(body.session_rows)))
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
            principal = admit(envelope, ts, self.auth, self.usage, self._user)
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

    # --- rebuilding (the storage primitives: concord.kv.store) -----------------------------

    def _reset(self) -> None:
        self.applied_index = 0
        self.revision = 0
        self.last_ts_ms = 0
        self._user.clear()
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


def _is_key_source(machine: KvStateMachine) -> KeySource:
    """Static check (mypy): KvStateMachine is a KeySource for the query engine."""
    return machine
