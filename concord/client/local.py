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

Not thread-safe: the Client calls it under its lock.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from enum import Enum
from functools import lru_cache
from typing import Final, Mapping
from urllib.parse import urlsplit

from concord.errors import ClientError, ConcordError
from concord.kv.commands import check_key
from concord.net import wire
from concord.shm.reader import Reader
from concord.shm.layout import FORMAT_VERSION, SegmentNames
from concord.shm.segments import DEV_SHM
from concord.shm.view import MISSING, ShmView


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

    Args:
        view: the attached view (owned: closed by `close`).
        names: the segment names it was attached with.
        check_every_s: how often to check that the store still exists.
    """

    #: What `get` returns when it declines (also reachable without importing this module).
    DECLINED: Final = DECLINED

    def __init__(
        self,
        view: ShmView,
        names: SegmentNames,
        check_every_s: float = 1.0,
    ) -> None:
        self._view = view
        self._names = names
        self._reader = Reader(view)
        self._config = self._reader.config
        self._check_every_s = check_every_s
        self._next_check = time.monotonic() + check_every_s
        self._closed = False
        #: Counters, for tests and metrics.
        self.served = 0
        self.declined = 0

    @classmethod
    def open(cls, names: SegmentNames) -> LocalStore | None:
        """Attach to a store, or None if it is not on this host (or not a v1 store)."""
        try:
            view = ShmView.attach(names)
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

    def get(self, key: object, consistency: str) -> object:
        """
        `get` without meta, the hot path of `Client.get`: the decoded value, `MISSING`
        (absent or expired), or `DECLINED` (not servable here: go over the wire). The same
        answers and errors as `read("get", ...)`, without building request and reply maps.

        Raises:
            InvalidKeyError, InvalidRequestError: as the node would answer.
        """
        # NB: `_closed`, not `alive`: the Client checked `alive` just before (it looks the
        # control segment up in /dev/shm every check_every_s).
        if self._closed or (consistency != "eventual" and consistency != "leader"):
            self.declined += 1
            return DECLINED
        checked = check_key(key, self._config)
        view = self._view
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
        return Reader.decode_checked(checked, raw)

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
        if not self._closed:
            self._closed = True
            self._view.close()

