"""
The read logic over the shared-memory store: what read workers and same-host clients serve.

Pure logic over a `ShmView`: no sockets, no threads. Every op first brings the view up to
date with the writer (one header-word check when nothing changed) and then answers from
that one consistent state, evaluated at the published leader time (keys with
0 < expires_at_ms <= leader time are hidden, exactly as the state machine hides them).

Key selection, filters, paging and reply shapes are `concord.kv`'s: `serve` runs
`concord.kv.reads.serve_read` over `ShmKeySource`, the `KeySource` this module builds on
the view (sorted key index, records, and the secondary indexes it rebuilds from the
SYSTEM-space index definitions it sees), and the auth tables (`auth`, concord.auth.state)
from the SYSTEM-space auth records, so read workers check tokens against the replicated
state as published. The typed methods (`get`, `get_encoded`,
`get_many`, ...) are fast paths over the view for embedded use and the hot wire ops.

Strong reads: `wait_applied(read_index)` polls the published applied index with
exponential backoff (20 us .. 1 ms) and returns how long it waited.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from concord.errors import (
    ERROR_CLASSES,
    ClientError,
    InvalidRequestError,
    NotFoundError,
    RequestTimeoutError,
    TooManyItemsError,
)
from concord.auth.state import AUTH_PREFIX, AuthState, Principal
from concord.kv.config import DEFAULT_CONFIG, KvConfig
from concord.kv.index import INDEX_PREFIX, IndexDef, IndexSet
from concord.kv.commands import ENVELOPE_FIELDS, check_key
from concord.kv.reads import (
    READ_ARGS,
    READ_OPS,
    Reply,
    error_reply,
    serve_read,
    ttl_seconds,
)
from concord.kv.record import KeyRecord, Space
from concord.kv.scope import scoped
from concord.kv.values import decode_stored
from concord.shm.view import Locator, ShmView, decode_value

logger = logging.getLogger(__name__)

_GET_ARGS = READ_ARGS["get"]
_GET_MANY_ARGS = READ_ARGS["get_many"]
#: Read ops that name their keys (`key`, `keys`): no range to confine.
_NAMED_KEY_OPS = frozenset({"get", "get_many", "ttl", "get_with_ttl"})
_FIRST_DELAY_S = 20e-6
_MAX_DELAY_S = 1e-3


class ShmKeySource:
    """
    `concord.kv.query.KeySource` over a view. Reads the view's state as last synced: the
    caller syncs once per op, so one query sees one state.
    """

    def __init__(self, view: ShmView, indexes: IndexSet) -> None:
        self._view = view
        self._indexes = indexes

    def get_record(self, key: str) -> KeyRecord | None:
        """The user record of `key` (possibly due to expire), or None."""
        loc = self._view.locator(key)
        return None if loc is None else self._view.record_at(loc, key)

    def iter_keys(self, start: str | None = None, inclusive: bool = True) -> Iterator[str]:
        """User keys in ascending code point order from `start`."""
        keys = self._view.sorted_keys(Space.USER)
        if start is None:
            return iter(keys)
        it: Iterator[str] = keys.irange(minimum=start, inclusive=(inclusive, True))
        return it

    def index_set(self) -> IndexSet:
        """The secondary indexes rebuilt from the SYSTEM-space definitions."""
        return self._indexes


@dataclass(frozen=True, slots=True)
class Meta:
    """A key's metadata as the wire `get` with meta returns it (ttl: seconds or None)."""

    revision: int
    version: int
    create_revision: int
    ttl: float | None


@dataclass(frozen=True, slots=True)
class WaitStats:
    """How strong reads waited for the applied index (for metrics)."""

    waits: int
    total_wait_s: float
    max_wait_s: float


class Reader:
    """
    Serves reads of one read worker from a view. Not thread-safe (one per thread).

    Args:
        view: an attached view; the reader does not close it.
        config: kv limits (max items, default and max limit, key rules).
    """

    def __init__(self, view: ShmView, config: KvConfig = DEFAULT_CONFIG) -> None:
        self._view = view
        self._config = config
        self._indexes = IndexSet()
        self._source = ShmKeySource(view, self._indexes)
        self.auth = AuthState()  # the auth tables, rebuilt from SYSTEM records
        self._waits = 0
        self._wait_total_s = 0.0
        self._wait_max_s = 0.0
        view.subscribe(self._on_change, self._rebuild_indexes)
        self._rebuild_indexes()

    @property
    def view(self) -> ShmView:
        return self._view

    @property
    def config(self) -> KvConfig:
        """The kv limits reads are checked against."""
        return self._config

    @property
    def source(self) -> ShmKeySource:
        """The KeySource (valid for the state of the last sync)."""
        return self._source

    def now_ms(self) -> int:
        """The cluster time reads are evaluated at (ShmView.now_ms)."""
        return self._view.now_ms()

    # -- the wire ops -----------------------------------------------------------------

    def serve(self, op: str, args: Mapping[str, object], principal: Principal | None = None) -> Reply:
        """
        Evaluate a read op (`concord.kv.reads.READ_OPS`) with the wire reply shape of
        docs/protocol.md (errors as {"error": code, "message": text}), in the keyspace of
        `principal` (its tenant's, or the root keyspace without tenant keys; None or a
        cluster admin: every key).
        """
        view = self._view
        view.sync()
        if principal is not None and (principal.tenant is not None or op not in _NAMED_KEY_OPS) \
                and not principal.is_cluster_admin:
            # NB: a root token's named keys were checked (tenant keys refused unless
            # admin): they take the fast paths below; ranges must not see tenant keys.
            return serve_read(scoped(principal, self._source), op, args, view.now_ms(),
                              self._config)
        # Fast paths for the hottest ops, with kv's exact replies and errors (the
        # equivalence tests hold them to it); everything else is kv's code.
        if op == "get" and args.keys() <= _GET_ARGS and not args.get("meta"):
            try:
                key = check_key(args.get("key"), self._config)
                raw = view.get_encoded(key)
                if raw is None:
                    raise NotFoundError(f"key {key!r} not found")
                return {"value": self.decode_checked(key, raw)}
            except ClientError as exc:
                return error_reply(exc)
        if op == "get_many" and args.keys() <= _GET_MANY_ARGS:
            try:
                return {"values": self._get_many(args.get("keys"))}
            except ClientError as exc:
                return error_reply(exc)
        return serve_read(self._source, op, args, view.now_ms(), self._config)

    def _get_many(self, keys: object) -> dict[str, object]:
        if not isinstance(keys, (list, tuple)):
            raise InvalidRequestError("get_many needs a list of keys")
        if len(keys) > self._config.max_items:
            raise TooManyItemsError(
                f"{len(keys)} keys, more than the maximum {self._config.max_items}"
            )
        checked = [check_key(k, self._config) for k in keys]
        values: dict[str, object] = {}
        for key, raw in zip(checked, self._view.get_many_encoded(checked)):
            if raw is not None:
                values[key] = self.decode_checked(key, raw)
        return values

    @staticmethod
    def decode_checked(key: str, raw: bytes) -> object:
        """
        A stored value's bytes decoded.

        Raises:
            InvalidRequestError: they do not decode (named after the key).
        """
        try:
            return decode_value(raw)
        except ValueError as exc:
            raise InvalidRequestError(f"stored value of key {key!r} does not decode") from exc

    def serve_request(self, request: Mapping[str, object]) -> Reply:
        """`serve` for a whole wire request map (envelope fields are ignored)."""
        op = request.get("op")
        if not isinstance(op, str) or op not in READ_OPS:
            return error_reply(InvalidRequestError(f"{op!r} is not a read op"))
        return self.serve(op, {k: v for k, v in request.items() if k not in ENVELOPE_FIELDS})

    # -- typed fast paths ---------------------------------------------------------------

    def get(self, key: str) -> object:
        """
        The decoded value of `key`.

        Raises:
            NotFoundError: absent or expired.
        """
        raw = self._view.get_encoded(key)
        if raw is None:
            raise NotFoundError(f"key {key!r} not found")
        return decode_value(raw)

    def get_encoded(self, key: str) -> bytes:
        """
        The value's msgpack bytes (decompressed), ready to splice into a reply.

        Raises:
            NotFoundError: absent or expired.
        """
        raw = self._view.get_encoded(key)
        if raw is None:
            raise NotFoundError(f"key {key!r} not found")
        return raw

    def get_many(self, keys: Iterable[str]) -> dict[str, object]:
        """Decoded values of the keys present and unexpired (absent ones are left out)."""
        return self._get_many(list(keys))

    def get_with_ttl(self, key: str) -> tuple[object, float | None]:
        """
        (value, seconds to live or None).

        Raises:
            NotFoundError: absent or expired.
        """
        record = self._live(key)
        return decode_stored(record.value, record.flags), ttl_seconds(record, self.now_ms())

    def ttl(self, key: str) -> float | None:
        """
        Seconds until `key` expires, None if never.

        Raises:
            NotFoundError: absent or expired.
        """
        return ttl_seconds(self._live(key), self.now_ms())

    def meta(self, key: str) -> Meta:
        """
        revision (mod_revision), version, create_revision and ttl of `key`.

        Raises:
            NotFoundError: absent or expired.
        """
        r = self._live(key)
        return Meta(r.mod_revision, r.version, r.create_revision, ttl_seconds(r, self.now_ms()))

    def get_all(self, limit: int | None = None, after: str | None = None) -> Reply:
        """{"items": [[key, value], ...], "more": bool} in key order, after `after`."""
        return self._ok(self.serve("get_all", {"limit": limit, "after": after}))

    def keys(self, query: Mapping[str, object]) -> Reply:
        """{"keys": [...], "more": bool} for a query (prefix, suffix, ..., limit, offset)."""
        return self._ok(self.serve("keys", query))

    def query(self, query: Mapping[str, object]) -> Reply:
        """{"items": [[key, value], ...], "more": bool} for a query."""
        return self._ok(self.serve("query", query))

    def count(self, query: Mapping[str, object]) -> int:
        """How many live keys match a query."""
        n = self._ok(self.serve("count", query))["count"]
        assert isinstance(n, int)
        return n

    # -- strong reads ---------------------------------------------------------------------

    def wait_applied(self, read_index: int, timeout_s: float) -> float:
        """
        Wait until the published applied index reaches `read_index`, then sync.

        Returns:
            Seconds waited (0.0 when it already had).

        Raises:
            RequestTimeoutError: not reached within timeout_s.
        """
        view = self._view
        applied = view.applied_index_now()
        if applied >= read_index:
            view.sync()
            return 0.0
        start = time.monotonic()
        deadline = start + timeout_s
        delay = _FIRST_DELAY_S
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise RequestTimeoutError(
                    f"applied index {applied} did not reach read index {read_index} "
                    f"within {timeout_s}s"
                )
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, _MAX_DELAY_S)
            applied = view.applied_index_now()
            if applied >= read_index:
                break
        view.sync()
        waited = time.monotonic() - start
        self._waits += 1
        self._wait_total_s += waited
        self._wait_max_s = max(self._wait_max_s, waited)
        return waited

    def wait_stats(self) -> WaitStats:
        """Strong-read waits so far."""
        return WaitStats(self._waits, self._wait_total_s, self._wait_max_s)

    # -- internals --------------------------------------------------------------------

    def _live(self, key: str) -> KeyRecord:
        record = self._view.record(key)
        if record is None:
            raise NotFoundError(f"key {key!r} not found")
        return record

    @staticmethod
    def _ok(reply: Reply) -> Reply:
        code = reply.get("error")
        if code is not None:
            cls = ERROR_CLASSES.get(str(code), InvalidRequestError)
            raise cls(str(reply.get("message", code)))
        return reply

    def _user_records(self) -> Iterator[KeyRecord]:
        view = self._view
        for key, loc in view.items(Space.USER):
            yield view.record_at(loc, key)

    def _on_change(self, space: int, key: str, loc: Locator | None) -> None:
        if space == Space.SYSTEM:
            if key.startswith(INDEX_PREFIX):
                self._apply_definition(key, loc)
            elif key.startswith(AUTH_PREFIX):
                self.auth.set_record(key, None if loc is None else self._view.encoded_at(loc))
            return
        if self._indexes:
            self._indexes.update(key, None if loc is None else self._view.record_at(loc, key))

    def _apply_definition(self, key: str, loc: Locator | None) -> None:
        name = key[len(INDEX_PREFIX) :]
        if loc is None:
            self._indexes.drop(name)
            return
        try:
            definition = IndexDef.decode(key, self._view.encoded_at(loc))
        except InvalidRequestError:
            logger.warning("ignoring bad index definition key=%s", key)
            self._indexes.drop(name)
            return
        self._indexes.create(definition, self._user_records())

    def _rebuild_indexes(self) -> None:
        self._indexes.clear()
        self.auth.clear()
        for key, loc in list(self._view.items(Space.SYSTEM)):
            if key.startswith(INDEX_PREFIX):
                self._apply_definition(key, loc)
            elif key.startswith(AUTH_PREFIX):
                self.auth.set_record(key, self._view.encoded_at(loc))


__all__ = ["Meta", "Reader", "ShmKeySource", "WaitStats"]
