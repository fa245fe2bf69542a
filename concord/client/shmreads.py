"""
Same-host reads of the sync client: while a node of the cluster runs on this host, reads
that allow it (`eventual`, and `leader` under the node's lease) are served from its
shared-memory store (concord.client.local.LocalStore) instead of over the wire.

`LocalReads` is a base class of concord.client.client.Client, which sets the attributes
declared here. The store is found by asking `status` of the endpoints on this host (never
a remote one), at most every `shm_probe_every_s`; token and ns are checked by the node,
never by shared memory, so a client that sends them reads over the wire only.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Mapping

from concord import telemetry
from concord.client.plan import ClientCore, error_from_reply
from concord.errors import ClientError, ProtocolError

if TYPE_CHECKING:
    from concord.client.local import LocalStore

# NB: the client's logger: these lines read as they did before the split.
log = logging.getLogger("concord.client.client")

NOT_LOCAL = object()  # not served from same-host shared memory: ask a node


class LocalReads(ClientCore):
    """Reads from a same-host store, falling back to the wire (attributes set by Client)."""

    _lock: threading.RLock
    _probe_lock: threading.Lock
    _closed: bool
    _local_ok: bool
    shm_probe_every_s: float
    _store: LocalStore | None
    _next_probe: float

    def call(
        self, op: str, args: Mapping[str, object] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, object]:
        raise NotImplementedError  # pragma: no cover - Client defines it

    def _call_at(
        self, endpoint: str, op: str, args: Mapping[str, object], timeout_s: float
    ) -> dict[str, object]:
        raise NotImplementedError  # pragma: no cover - Client defines it

    def _local_or_call(
        self, op: str, args: Mapping[str, object], consistency: str
    ) -> dict[str, object]:
        """Serve a read from same-host shared memory when allowed, else over the wire."""
        # NB: token and ns are checked by the node, never by shared memory: a client
        # that sends them reads over the wire only.
        if self._local_ok and consistency in ("eventual", "leader"):
            started = time.perf_counter()
            full = {**args, "consistency": consistency}
            store = self._local_store()
            with self._lock:
                if store is not None and not self._closed:
                    # Arguments are checked by the kv read logic (same error classes).
                    reply = store.read(op, full)
                    if reply is not None:
                        if telemetry.listening(telemetry.CLIENT_CALL):
                            telemetry.client_call(op, full, time.perf_counter() - started,
                                                  reply, "shm")
                        if reply.get("ok") is False:
                            raise error_from_reply(reply)
                        return reply
        return self.call(op, {**args, "consistency": consistency})

    def _local_get(self, key: str, consistency: str) -> object:
        """`LocalStore.get` of the attached store: a value, `MISSING`, or `NOT_LOCAL`."""
        store = self._local_store()
        with self._lock:
            if store is None or self._closed:
                return NOT_LOCAL
            value = store.get(key, consistency)
            return NOT_LOCAL if value is store.DECLINED else value

    def _local_store(self) -> LocalStore | None:
        """
        The attached same-host store. While none is attached, at most every
        `shm_probe_every_s`: ask `status` of each endpoint on this host (the last known
        leader first; remote endpoints are never asked) and attach the first store that
        exists here. One thread probes; the others go over the wire meanwhile.
        """
        if self._closed:
            return None
        store = self._store
        if store is not None:
            if store.alive:
                return store
            self._store = None
        now = time.monotonic()
        if now < self._next_probe or not self._probe_lock.acquire(blocking=False):
            return None
        try:
            self._next_probe = now + self.shm_probe_every_s
            found = self._probe_local_store()
        finally:
            self._probe_lock.release()
        with self._lock:
            if self._closed:
                if found is not None:
                    found.close()
                return None
            self._store = found
        return found

    def _probe_local_store(self) -> LocalStore | None:
        from concord.client.local import LocalStore, is_local_endpoint, shm_names  # noqa: PLC0415

        leader = self._routing.leader
        candidates = ([leader] if leader else []) + list(self.endpoints)
        for endpoint in dict.fromkeys(candidates):
            if not is_local_endpoint(endpoint):
                continue
            try:
                status = self._call_at(
                    endpoint, "status", {}, min(self.timeout_s, self.attempt_timeout_s))
            except (ClientError, ProtocolError) as exc:
                log.debug("shm probe failed endpoint=%s error=%s", endpoint, exc)
                continue
            names = shm_names(status)
            if names is None:
                continue
            store = LocalStore.open(names)
            if store is not None:
                log.info("reading from same-host shared memory endpoint=%s ctl=%s", endpoint, names.ctl)
                return store
        return None

    @property
    def local_store(self) -> LocalStore | None:
        """The attached same-host store, if any (its counters are useful in tests)."""
        return self._store
