"""
Same-host reads from a node's shared-memory store (docs/client.md, docs/formats/shm.md).

When a node runs on this host, its `status` reply advertises its store:

    "shm": {"node": str, "token": str, "version": int}

`node` and `token` are the `concord.shm.layout.SegmentNames` parts (segments
`concord-<node>-<token>-ctl` and `-g<N>`), `version` the shm format version (only
`FORMAT_VERSION` is understood; another version is ignored). The client attaches READ-ONLY through
`concord.shm.view.ShmView`, which maps segments with `_posixshmem` + mmap and never
registers them with Python's resource tracker (on 3.11 `SharedMemory` would, and the
tracker would unlink the node's store when this process exits); nothing here ever
unlinks. A store advertised by a node on another host does not exist here: attaching
fails with FileNotFoundError and the client keeps using the wire.

Which reads are served locally:

- `eventual`: always, from whatever the node has applied (ops get, get_many, ttl,
  get_with_ttl, get_all, keys, query, count), with the node's read logic
  (`concord.shm.reader.Reader`, which is `concord.kv.reads` over the view), so replies
  are identical to a read worker's;
- `leader`: only while the store's node is the LEADER and holds its read lease
  (`ShmView.holds_leader_lease`: the lease the raft worker publishes on CLOCK_MONOTONIC,
  the same clock as ours on one host), checked after the read: the same rule as the
  node's read workers. Otherwise the read goes over the wire (declined, never failed:
  a leader without a lease serves it there after a ReadIndex round);
- `strong`: never (ReadIndex needs the leader).

Every `check_every_s` the control segment's name is looked up in /dev/shm; once the
supervisor has unlinked it (node stopped) the view is dropped and reads use the wire.

Threads: `LocalStore.get` (the hot path of `Client.get`) takes no lock when it answers
from its cache of decoded values; everything else (catch-ups of the view, cache fills,
`read`, `close`) runs under the view's lock. What needs the lock is what mutates: a
catch-up changes the view's key indexes in place and may re-map the generation, `close`
unmaps. A lookup made without the lock is valid only if no catch-up or close overlapped
it: each of them makes `_SharedView.epoch` odd while it runs and even again after (a
seqlock within this process), and a lookup that sees the epoch odd, or changed, is done
again under the lock. So a half-done catch-up is never seen.
"""

from __future__ import annotations

import ipaddress
import logging
import mmap
import os
import socket
import threading
import time
from enum import Enum
from functools import lru_cache
from typing import Final, Mapping
from urllib.parse import urlsplit

from concord.errors import ClientError, ConcordError
from concord.kv.commands import check_key
from concord.kv.record import Space
from concord.net import wire
from concord.shm.reader import Reader
from concord.shm.layout import FORMAT_VERSION, SegmentNames
from concord.shm.segments import DEV_SHM
from concord.shm.view import INLINE_MAX, MISSING, Locator, ShmView


class Declined(Enum):
    """The type of `DECLINED`."""

    DECLINED = 0


#: `LocalStore.get`: not servable from shared memory, ask a node.
DECLINED: Final = Declined.DECLINED

__all__ = ["LOCAL_OPS", "LocalStore", "is_local_endpoint", "shm_names"]

log = logging.getLogger(__name__)

#: Ops the client may serve from shared memory (derived from the wire table).
LOCAL_OPS: Final = wire.LOCAL_OPS


@lru_cache(maxsize=256)
def is_local_endpoint(endpoint: str) -> bool:
    """
    True if `endpoint` points at this host: ipc://, or tcp:// to a loopback address or
    an address this host's name resolves to (names resolved once, cached).
    Only such endpoints are asked whether they have a store to attach.
    """
    if endpoint.startswith("ipc://"):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    try:
        host = urlsplit(endpoint).hostname
    except ValueError:
        return False
    if not host:
        return False
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return False
    local = _host_addresses()
    for address in addresses:
        text = str(address).split("%")[0]
        try:
            if ipaddress.ip_address(text).is_loopback or text in local:
                return True
        except ValueError:
            continue
    return False


def _host_addresses() -> set[str]:
    out: set[str] = set()
    for name in {socket.gethostname(), socket.getfqdn()}:
        try:
            out.update(str(info[4][0]).split("%")[0] for info in socket.getaddrinfo(name, None))
        except (OSError, UnicodeError):
            continue
    return out


#: Decoded values the cache may hand out as they are: immutable, so no caller can change
#: what another one gets (lists and maps are decoded afresh on every read).
_IMMUTABLE: Final = frozenset({str, int, float, bytes, bool, type(None)})
_USER: Final = int(Space.USER)
_NOT_CACHED: Final = object()
_monotonic = time.monotonic


class _SharedView(ShmView):
    """
    A `ShmView` shared by the threads of one process: catch-ups run under `lock`, and
    `epoch` is odd while one (or `LocalStore.close`) runs, even otherwise (see the module
    docstring).
    """

    def __init__(self, names: SegmentNames, ctl: mmap.mmap) -> None:
        self.lock = threading.RLock()
        self.epoch = 0
        super().__init__(names, ctl)

    def _catch_up(self) -> None:
        with self.lock:
            self.epoch += 1
            try:
                super()._catch_up()
            finally:
                self.epoch += 1


def shm_names(status: Mapping[str, object]) -> SegmentNames | None:
    """The segment names a `status` reply advertises, or None (absent, malformed, other version)."""
    info = status.get("shm")
    if not isinstance(info, dict):
        return None
    node, token, version = info.get("node"), info.get("token"), info.get("version", FORMAT_VERSION)
    if not isinstance(node, str) or not isinstance(token, str) or version != FORMAT_VERSION:
        return None
    try:
        return SegmentNames(node, token)
    except ValueError:
        return None


class LocalStore:
    """
    A read-only view of one node's store serving reads as that node's read workers would.
    Thread-safe (see the module docstring).

    `get` keeps the decoded values of keys it read in a cache, while they are unchanged:
    only values of an immutable type (str, int, float, bytes, bool, None), of at most
    INLINE_MAX encoded bytes, of keys without an expiry; an entry is dropped when the view
    ingests a change of its key, and all are dropped when the view rebuilds. So the cache
    holds at most one entry per small plain key of the store, as the view's own index does.

    Args:
        view: the attached view (owned: closed by `close`).
        names: the segment names it was attached with.
        check_every_s: how often to check that the store still exists.
    """

    #: What `get` returns when it declines (also reachable without importing this module).
    DECLINED: Final = DECLINED

    def __init__(
        self,
        view: _SharedView,
        names: SegmentNames,
        check_every_s: float = 1.0,
    ) -> None:
        self._view = view
        #: key -> decoded value (see the class docstring).
        self._values: dict[str, object] = {}
        view.subscribe(self._on_change, self._values.clear)
        self._names = names
        self._reader = Reader(view)
        self._config = self._reader.config
        self._check_every_s = check_every_s
        self._next_check = time.monotonic() + check_every_s
        self._closed = False
        #: Counters, for tests and metrics (NB: threads reading at once may lose counts).
        self.served = 0
        self.declined = 0

    @classmethod
    def open(cls, names: SegmentNames) -> LocalStore | None:
        """Attach to a store, or None if it is not on this host (or not a v1 store)."""
        try:
            view = _SharedView.attach(names)
            assert isinstance(view, _SharedView)
        except (FileNotFoundError, ValueError, OSError, ConcordError) as exc:
            log.info("shared-memory store not attachable ctl=%s error=%s", names.ctl, exc)
            return None
        try:
            return cls(view, names)
        except BaseException:
            view.close()
            raise

    @property
    def alive(self) -> bool:
        """False once closed, or once the store's control segment is gone."""
        if self._closed:
            return False
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._check_every_s
            if not os.path.exists(os.path.join(DEV_SHM, self._names.ctl)):
                log.info("shared-memory store is gone ctl=%s", self._names.ctl)
                self.close()
                return False
        return True

    @property
    def closed(self) -> bool:
        """True once closed (by `close`, or because the store is gone or corrupt)."""
        return self._closed

    def get(self, key: object, consistency: str) -> object:
        """
        `get` without meta, the hot path of `Client.get`: the decoded value, `MISSING`
        (absent or expired), or `DECLINED` (not servable here: go over the wire). The same
        answers and errors as `read("get", ...)`, without building request and reply maps.

        Raises:
            InvalidKeyError, InvalidRequestError: as the node would answer.
        """
        # The fast path, without the lock: a cached value, read between two equal even
        # epochs, and for `leader` under a lease checked after the read. Anything else
        # (the existence check due, a miss, a catch-up or close overlapping, a key that
        # is not hashable) is done again under the lock.
        view = self._view
        if _monotonic() < self._next_check and (consistency == "eventual" or consistency == "leader"):
            try:
                view.sync()
                epoch = view.epoch
                value = self._values.get(key, _NOT_CACHED)  # type: ignore[call-overload]
                if (
                    value is not _NOT_CACHED
                    and not epoch & 1
                    and (consistency == "eventual" or view.holds_leader_lease())
                    and view.epoch == epoch
                ):
                    self.served += 1
                    return value
            except Exception:  # noqa: BLE001 - e.g. a key not hashable, a view closed meanwhile
                pass  # NB: the locked path meets the same condition and answers it
        return self._get_locked(key, consistency)

    def _get_locked(self, key: object, consistency: str) -> object:
        """`get` under the view's lock; fills the cache."""
        view = self._view
        with view.lock:
            if (
                self._closed
                or (_monotonic() >= self._next_check and not self.alive)
                or (consistency != "eventual" and consistency != "leader")
            ):
                self.declined += 1
                return DECLINED
            checked = check_key(key, self._config)
            try:
                raw = view.get_encoded(checked)
            except ConcordError as exc:  # not a ClientError: e.g. CorruptionError
                log.warning("shared-memory read failed, detaching ctl=%s error=%s", self._names.ctl, exc)
                self.close()
                self.declined += 1
                return DECLINED
            if consistency == "leader" and not view.holds_leader_lease():
                self.declined += 1
                return DECLINED
            self.served += 1
            if raw is None:
                return MISSING
            value = Reader.decode_checked(checked, raw)
            if (
                len(raw) <= INLINE_MAX
                and type(value) in _IMMUTABLE
                and type(checked) is str
                and not view.expires_at_ms(checked)
            ):
                self._values[checked] = value
            return value

    def _on_change(self, space: int, key: str, loc: Locator | None) -> None:
        """The view ingested a change of `key` (under the lock): drop its cached value."""
        if space == _USER:
            self._values.pop(key, None)

    def read(self, op: str, args: Mapping[str, object]) -> dict[str, object] | None:
        """
        A reply map ({"ok": true, ...} or {"ok": false, "error", "message", "leader"}) for a
        read served here, or None: not servable locally, go over the wire.
        """
        consistency = args.get("consistency", "leader")
        if op not in LOCAL_OPS or consistency not in ("eventual", "leader") or not self.alive:
            self.declined += 1
            return None
        plain = {k: v for k, v in args.items() if k != "consistency" and v is not None}
        with self._view.lock:
            if self._closed:
                self.declined += 1
                return None
            try:
                reply = self._reader.serve(op, plain)
            except ClientError as exc:
                reply = {"error": exc.code, "message": exc.message}
            except ConcordError as exc:
                # E.g. CorruptionError: never trust this mapping again; the wire still works.
                log.warning("shared-memory read failed, detaching ctl=%s error=%s", self._names.ctl, exc)
                self.close()
                self.declined += 1
                return None
            if consistency == "leader" and not self._view.holds_leader_lease():
                self.declined += 1
                return None
            self.served += 1
        if "error" in reply:
            return {"ok": False, "error": reply["error"], "message": reply.get("message", ""), "leader": None}
        return {"ok": True, **reply}

    def close(self) -> None:
        """Unmap the view (never unlinks). Idempotent."""
        with self._view.lock:
            if not self._closed:
                # NB: left odd: a lookup without the lock never trusts this view again.
                self._view.epoch += 1
                self._closed = True
                self._values.clear()
                self._view.close()

