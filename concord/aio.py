"""
The asyncio client of Concord: `concord.aio.Client`, the same methods, errors and
semantics as the sync `concord.Client`, awaited.

Both clients drive the same sans-IO code: `concord.client.plan` (settings, leader
routing, session slots, the retry plan, reply classification and error mapping) and
`concord.client.requests` (each method's request and typed result). Only the waiting
differs: here `concord.client.aio_transport` (one DEALER per endpoint, zmq.asyncio, with
the sync transport's dead-node detection and Lazy Pirate). Not served from same-host
shared memory
(that read is a blocking call; use the sync Client for microsecond reads).

Use from one event loop; create the client inside it (`async with Client(...)`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator, Callable, Iterable, Literal, Mapping, Sequence, TypeVar, overload

import zmq.asyncio

from concord import telemetry
from concord.client import auth, requests
from concord.client.client import Condition, check_condition_alone, cas_view
from concord.client.aio_transport import AioTransport
from concord.client.link import Reply
from concord.client.plan import Attempt, CallPlan, ClientCore
from concord.client.requests import NO_DEFAULT, Filter, Range, Req
from concord.client.results import (
    BulkDeleteResult,
    DeleteResult,
    Event,
    EventsPage,
    KeysPage,
    Page,
    ValueWithMeta,
    ValueWithTTL,
)
from concord.client.subscribe import Subscription
from concord.errors import (
    ConditionFailedError,
    NotFoundError,
    ShuttingDownError,
)
from concord.net.curve import CurveClient
from concord.net.wire import pack
from concord.tracing import client_span

__all__ = ["Client", "AsyncSubscription"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Client(ClientCore):
    """
    An asyncio connection to a Concord cluster; arguments as for `concord.Client`
    (no shared-memory reads; `context` is a zmq.asyncio.Context).

    Raises:
        ConfigError: no endpoint, or a bad timing value.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout_s: float = 5.0,
        retries: int = 4,
        attempt_timeout_s: float | None = None,
        client_id: str | None = None,
        sessions: bool = True,
        token: str | None = None,
        ns: str | None = None,
        context: zmq.asyncio.Context | None = None,
        max_redirects: int = 5,
        backoff_s: float = 0.02,
        max_backoff_s: float = 0.05,
        cas_retries: int = 16,
        first_seq: int | None = None,
        server_key: str | None = None,
        key_pair: tuple[str, str] | None = None,
        direct: bool = True,
    ) -> None:
        super().__init__(
            endpoints, timeout_s=timeout_s, retries=retries, attempt_timeout_s=attempt_timeout_s,
            client_id=client_id, sessions=sessions, token=token, ns=ns, max_redirects=max_redirects,
            backoff_s=backoff_s, max_backoff_s=max_backoff_s, cas_retries=cas_retries, first_seq=first_seq,
            direct=direct,
        )
        self._own_ctx = context is None
        self._ctx = zmq.asyncio.Context() if context is None else context
        self._curve = CurveClient.of(server_key, key_pair)
        self._transport = AioTransport(self._ctx, self._curve)

    @property
    def transport(self) -> AioTransport:
        """The socket layer (its counters are useful in tests and metrics)."""
        return self._transport

    async def close(self) -> None:
        """Close sockets; terminate the context if owned. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._transport.close()
        if self._own_ctx:
            self._ctx.term()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"aio.Client(endpoints={list(self.endpoints)!r}, client_id={self.client_id!r})"

    # -- the request loop ----------------------------------------------------------

    async def call(
        self, op: str, args: Mapping[str, object] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, object]:
        """As `concord.Client.call`, awaited."""
        if self._closed:
            raise ShuttingDownError("client is closed")
        started = time.perf_counter()
        outcome: BaseException | None = None
        try:
            with client_span(op), self._session(op) as session:
                return await self._run(self._plan(op, args, session, timeout_s))
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            if telemetry.listening(telemetry.CLIENT_CALL):
                telemetry.client_call(op, args, time.perf_counter() - started, outcome, "wire")

    async def _run(self, plan: CallPlan) -> dict[str, object]:
        while (attempt := plan.attempt(time.monotonic())) is not None:
            reply = await self._exchange(attempt)
            outcome = plan.settle(attempt, reply, time.monotonic())
            if isinstance(outcome, dict):
                return outcome
            if outcome > 0:
                await asyncio.sleep(outcome)
        raise plan.failure()

    async def _exchange(self, attempt: Attempt) -> Reply:
        return await self._transport.exchange(
            attempt.to, pack(attempt.msg), attempt.request_id, attempt.wait_s)

    async def _do(self, req: Req[T]) -> T:
        args = req.args if req.consistency is None else {**req.args, "consistency": req.consistency}
        return req.decode(await self.call(req.op, args))

    # -- key-value ops (docstrings: concord.Client) ---------------------------------------

    async def put(
        self, key: str, value: object, ttl: float | None = None, compress: bool | None = None,
        *, lease: int | None = None,
    ) -> int:
        return await self._do(requests.put(key, value, ttl, compress, lease))

    @overload
    async def get(self, key: str, consistency: str = ..., *, meta: Literal[True]) -> ValueWithMeta: ...

    @overload
    async def get(self, key: str, consistency: str = ..., meta: bool = ..., default: object = ...) -> object: ...

    async def get(
        self, key: str, consistency: str = "leader", meta: bool = False, default: object = NO_DEFAULT
    ) -> object:
        try:
            return await self._do(requests.get(key, consistency, meta))
        except NotFoundError:
            if default is NO_DEFAULT:
                raise
            return default

    async def delete(self, key: str) -> DeleteResult:
        return await self._do(requests.delete(key))

    async def put_many(self, items: Iterable[tuple[str, object] | tuple[str, object, float | None]]) -> int:
        return await self._do(requests.put_many(items))

    async def get_many(self, keys: Iterable[str], consistency: str = "leader") -> dict[str, object]:
        return await self._do(requests.get_many(keys, consistency))

    async def delete_many(self, keys: Iterable[str]) -> BulkDeleteResult:
        return await self._do(requests.delete_many(keys))

    async def touch(self, key: str, ttl: float | None) -> int:
        return await self._do(requests.touch(key, ttl))

    async def touch_many(self, items: Iterable[tuple[str, float]]) -> int:
        return await self._do(requests.touch_many(items))

    async def ttl(self, key: str, consistency: str = "leader") -> float | None:
        return await self._do(requests.ttl(key, consistency))

    async def get_with_ttl(self, key: str, consistency: str = "leader") -> ValueWithTTL:
        return await self._do(requests.get_with_ttl(key, consistency))

    async def get_all(self, limit: int | None = None, after: str | None = None, consistency: str = "leader") -> Page:
        return await self._do(requests.get_all(limit, after, consistency))

    async def put_if(
        self, key: str, value: object, *, expected: object = NO_DEFAULT, version: int | None = None,
        mod_revision: int | None = None, absent: bool | None = None, ttl: float | None = None,
        condition: Condition | None = None, lease: int | None = None,
    ) -> int:
        conds = requests.conditions(expected, version, mod_revision, absent)
        if condition is None:
            return await self._do(requests.put_if(key, value, conds, ttl, lease))
        check_condition_alone(conds)
        for attempt in range(self.cas_retries):
            seen, revision = cas_view(await self.get(key, consistency="leader", meta=True, default=None))
            if not condition(seen):
                raise ConditionFailedError(f"condition on key {key!r} is false")
            try:
                return await self.put_if(key, value, mod_revision=revision, ttl=ttl, lease=lease)
            except ConditionFailedError:
                log.debug("put_if condition lost a race key=%s attempt=%d", key, attempt + 1)
        raise ConditionFailedError(f"key {key!r} changed during each of {self.cas_retries} put_if attempts")

    async def update(self, key: str, fn: Callable[[object], object], *, ttl: float | None = None) -> object:
        for attempt in range(self.cas_retries):
            seen, revision = cas_view(await self.get(key, consistency="leader", meta=True, default=None))
            value = fn(seen)
            try:
                await self.put_if(key, value, mod_revision=revision, ttl=ttl)
                return value
            except ConditionFailedError:
                log.debug("update lost a race key=%s attempt=%d", key, attempt + 1)
        raise ConditionFailedError(f"key {key!r} changed during each of {self.cas_retries} update attempts")

    # -- counters and leases (docstrings: concord.Client) ---------------------------------

    async def incr(self, key: str, delta: int = 1, *, ttl: float | None = None) -> int:
        return await self._do(requests.incr(key, delta, ttl))

    async def decr(self, key: str, delta: int = 1, *, ttl: float | None = None) -> int:
        return await self._do(requests.decr(key, delta, ttl))

    async def lease_grant(self, ttl: float) -> int:
        return await self._do(requests.lease_grant(ttl))

    async def lease_keepalive(self, lease: int) -> float:
        return await self._do(requests.lease_keepalive(lease))

    async def lease_revoke(self, lease: int) -> int:
        return await self._do(requests.lease_revoke(lease))

    async def leases(self, consistency: str = "leader") -> list[dict[str, object]]:
        return await self._do(requests.lease_list(consistency))

    async def delete_if(
        self, key: str, *, expected: object = NO_DEFAULT, version: int | None = None,
        mod_revision: int | None = None, absent: bool | None = None,
    ) -> DeleteResult:
        return await self._do(requests.delete_if(key, requests.conditions(expected, version, mod_revision, absent)))

    async def keys(
        self, *, prefix: str | None = None, suffix: str | None = None, contains: str | None = None,
        pattern: str | None = None, range: Range | None = None, where: Filter | None = None,
        limit: int | None = None, offset: int | None = None, consistency: str = "leader",
    ) -> KeysPage:
        args = requests.query_args(prefix, suffix, contains, pattern, range, where, limit, offset)
        return await self._do(requests.keys(args, consistency))

    async def query(
        self, *, prefix: str | None = None, suffix: str | None = None, contains: str | None = None,
        pattern: str | None = None, range: Range | None = None, where: Filter | None = None,
        limit: int | None = None, offset: int | None = None, consistency: str = "leader",
    ) -> Page:
        args = requests.query_args(prefix, suffix, contains, pattern, range, where, limit, offset)
        return await self._do(requests.query(args, consistency))

    async def count(
        self, *, prefix: str | None = None, suffix: str | None = None, contains: str | None = None,
        pattern: str | None = None, range: Range | None = None, where: Filter | None = None,
        limit: int | None = None, offset: int | None = None, consistency: str = "leader",
    ) -> int:
        args = requests.query_args(prefix, suffix, contains, pattern, range, where, limit, offset)
        return await self._do(requests.count(args, consistency))

    async def delete_where(
        self, *, prefix: str | None = None, suffix: str | None = None, contains: str | None = None,
        pattern: str | None = None, range: Range | None = None, where: Filter | None = None,
        limit: int | None = None, offset: int | None = None,
    ) -> BulkDeleteResult:
        args = requests.query_args(prefix, suffix, contains, pattern, range, where, limit, offset)
        return await self._do(requests.delete_where(args))

    async def events(self, since_revision: int, prefix: str | None = None, limit: int | None = None) -> EventsPage:
        return await self._do(requests.events(since_revision, prefix, limit))

    async def create_index(self, name: str, field: str | Sequence[str | int]) -> bool:
        return await self._do(requests.create_index(name, field))

    async def drop_index(self, name: str) -> bool:
        return await self._do(requests.drop_index(name))

    async def list_indexes(self, consistency: str = "leader") -> list[dict[str, object]]:
        return await self._do(requests.list_indexes(consistency))

    async def lookup(
        self, name: str, value: object = NO_DEFAULT, *, range: tuple[object, object] | None = None,
        limit: int | None = None, consistency: str = "leader",
    ) -> Page:
        return await self._do(requests.index_lookup(name, value, range, limit, consistency))

    # -- cluster ---------------------------------------------------------------------

    async def status(self) -> dict[str, object]:
        return await self._do(requests.status())

    async def members(self) -> list[dict[str, object]]:
        return await self._do(requests.members())

    async def add_member(
        self, member_id: str, host: str, client_port: int, peer_port: int, events_port: int,
        learner: bool | None = None,
    ) -> dict[str, object]:
        return await self._do(requests.add_member(member_id, host, client_port, peer_port, events_port, learner))

    async def remove_member(self, member_id: str) -> dict[str, object]:
        return await self._do(requests.remove_member(member_id))

    async def promote_member(self, member_id: str) -> dict[str, object]:
        return await self._do(requests.promote_member(member_id))

    async def transfer_leader(self, member_id: str | None = None) -> dict[str, object]:
        reply = await self._do(requests.transfer_leader(member_id))
        self._routing.follow(None)  # the next call finds the new leader through hints
        return reply

    # -- auth (docs/security.md; the sync client's AuthMethods, as coroutines) -----------

    async def bootstrap(self, description: str | None = None) -> dict[str, object]:
        return await self._do(auth.bootstrap(description))

    async def whoami(self) -> dict[str, object]:
        return await self._do(auth.whoami())

    async def token_create(self, role: str, tenant: str | None = None, ttl: float | None = None,
                           description: str | None = None) -> dict[str, object]:
        return await self._do(auth.token_create(role, tenant, ttl, description))

    async def token_list(self) -> list[dict[str, object]]:
        return await self._do(auth.token_list())

    async def token_revoke(self, token_id: str) -> bool:
        return await self._do(auth.token_revoke(token_id))

    async def role_put(self, name: str, rules: Sequence[Sequence[str]]) -> bool:
        return await self._do(auth.role_put(name, rules))

    async def role_list(self) -> list[dict[str, object]]:
        return await self._do(auth.role_list())

    async def role_delete(self, name: str) -> bool:
        return await self._do(auth.role_delete(name))

    async def tenant_put(self, name: str, max_keys: int | None = None, max_bytes: int | None = None,
                         write_rate: float | None = None, read_rate: float | None = None) -> bool:
        return await self._do(auth.tenant_put(name, max_keys, max_bytes, write_rate, read_rate))

    async def tenant_list(self) -> list[dict[str, object]]:
        return await self._do(auth.tenant_list())

    async def tenant_delete(self, name: str) -> bool:
        return await self._do(auth.tenant_delete(name))

    async def tenant_usage(self, name: str | None = None) -> dict[str, object]:
        return await self._do(auth.tenant_usage(name))

    # -- change stream -----------------------------------------------------------------

    def subscribe(
        self, prefix: str = "", types: Iterable[str] | None = None, since_revision: int | None = None,
        hwm: int = 10_000, *, events_endpoint: str | None = None, dead_after_s: float = 2.0,
    ) -> AsyncSubscription:
        """
        As `concord.Client.subscribe`, as an async iterator of `Event`
        (`async for event in client.subscribe("user:")`); close it with `aclose()` or
        `async with`.
        """
        return AsyncSubscription(Subscription(
            self.endpoints, prefix=prefix, types=types, since_revision=since_revision, hwm=hwm,
            events_endpoint=events_endpoint, token=self.token, ns=self.ns,
            timeout_s=self.timeout_s, dead_after_s=dead_after_s, curve=self._curve,
        ))


class AsyncSubscription:
    """
    A `concord.client.subscribe.Subscription` as an async iterator: the same ordering,
    gap detection and catch-up, each wait run in a worker thread in slices of `slice_s`
    so the loop never blocks and a cancelled iteration ends within one slice.
    """

    def __init__(self, sub: Subscription, slice_s: float = 0.1) -> None:
        self._sub = sub
        self._slice_s = slice_s
        self._busy: asyncio.Future[Event | None] | None = None

    @property
    def revision(self) -> int:
        """The revision of the last change delivered (as Subscription.revision)."""
        return self._sub.revision

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while True:
            event = await self.next(self._slice_s)
            if event is not None:
                return event

    async def next(self, timeout_s: float) -> Event | None:
        """The next event within `timeout_s`, or None."""
        loop = asyncio.get_running_loop()
        self._busy = loop.run_in_executor(None, self._sub.next, timeout_s)
        try:
            return await asyncio.shield(self._busy)
        finally:
            if self._busy.done():
                self._busy = None

    async def aclose(self) -> None:
        """Close the subscription's sockets (after any wait in progress ends). Idempotent."""
        busy = self._busy
        if busy is not None:
            await asyncio.wait([busy])
        self._sub.close()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
