"""concord.aio.Client: the sync client's scenarios, run against both clients, give the same outcomes."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Coroutine, Iterator

import pytest

from concord import aio
from concord.client import Client, ValueWithMeta
from concord.errors import (
    ConditionFailedError,
    ForbiddenError,
    NoLeaderError,
    NotFoundError,
    ShuttingDownError,
    UnknownResultError,
)
from tests.client.fakes import FakeNode

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(60)]

Scenario = Callable[["AnyClient"], Coroutine[object, object, object]]


class AnyClient:
    """One face for both clients: every method awaitable (the sync one simply runs)."""

    def __init__(self, sync: Client | None, async_: aio.Client | None) -> None:
        self.sync, self.async_ = sync, async_
        inner = sync if sync is not None else async_
        assert inner is not None
        self.inner: Client | aio.Client = inner

    def __getattr__(self, name: str) -> Callable[..., Awaitable[object]]:
        method = getattr(self.inner, name)

        async def call(*args: object, **kwargs: object) -> object:
            result = method(*args, **kwargs)
            return await result if asyncio.iscoroutine(result) else result

        return call


def run_both(endpoints: str | list[str], scenario: Scenario, **options: object) -> list[object]:
    """The scenario's result with a sync Client, then with an aio.Client of the same options."""
    results: list[object] = []
    with Client(endpoints, shm=False, **options) as sync:  # type: ignore[arg-type]
        results.append(asyncio.run(scenario(AnyClient(sync, None))))

    async def with_aio() -> object:
        async with aio.Client(endpoints, **options) as client:  # type: ignore[arg-type]
            return await scenario(AnyClient(None, client))

    results.append(asyncio.run(with_aio()))
    return results


def outcome(exc_type: type[BaseException]) -> Callable[[Scenario], Scenario]:
    """Wrap a scenario so that it returns the name of the error it raises."""
    def wrap(scenario: Scenario) -> Scenario:
        async def run(c: AnyClient) -> object:
            with pytest.raises(exc_type) as info:
                await scenario(c)
            return type(info.value).__name__
        return run
    return wrap


def sent_since(node: FakeNode, before: int) -> list[dict[str, object]]:
    return node.requests()[before:]


@pytest.fixture
def plain(a: FakeNode) -> Iterator[FakeNode]:
    yield a
    a.mode()


def test_same_requests_and_results_when_every_method_called(plain: FakeNode) -> None:
    """Both clients send the same ops and arguments and return equal typed results."""
    shapes: list[list[tuple[object, dict[str, object]]]] = []

    async def scenario(c: AnyClient) -> object:
        before = len(plain.requests())
        out = [
            await c.put("aio:1", 1, ttl=5), await c.get("aio:1", meta=True), await c.get("aio:none", default=7),
            await c.put_many([("aio:2", 2), ("aio:3", 3, 7.5)]), await c.get_many(["aio:2", "aio:9"]),
            await c.touch("aio:2", None), await c.ttl("aio:2"), await c.get_with_ttl("aio:3"),
            await c.keys(prefix="aio:"), await c.count(prefix="aio:"),
            await c.put_if("aio:4", 4, absent=True), await c.delete_if("aio:4", version=1),
            await c.put_if("aio:1", 10, condition=lambda v: v == 1),
            await c.delete_many(["aio:2"]), await c.delete_where(prefix="aio:"),
            await c.events(0, prefix="aio:", limit=1), await c.members(),
        ]
        envelope = {"id", "timeout_ms", "client_id", "seq", "min_seq"}
        # NB: a revision depends on what ran before; the argument's presence is what counts.
        shapes.append([(r["op"], {k: "*" if k == "mod_revision" else v for k, v in r.items()
                                  if k not in envelope and k != "op"})
                       for r in sent_since(plain, before)])
        return [type(x).__name__ for x in out]

    sync_types, aio_types = run_both(plain.endpoint, scenario, timeout_s=10.0, attempt_timeout_s=3.0)
    assert sync_types == aio_types
    assert shapes[0] == shapes[1]


def test_same_exactly_once_outcome_when_reply_lost(plain: FakeNode) -> None:
    """A lost reply: both resend with the same session pair and the write applies once."""
    async def scenario(c: AnyClient) -> object:
        before = len(plain.requests())
        plain.mode(drop_replies=1)
        revision = await c.put("aio:xo", "v")
        sent = sent_since(plain, before)
        meta = await c.get("aio:xo", meta=True)
        assert isinstance(meta, ValueWithMeta) and revision == meta.revision
        await c.delete("aio:xo")
        return len(sent), len({(r["client_id"], r["seq"]) for r in sent}), meta.version

    assert [(2, 1, 1)] * 2 == run_both(plain.endpoint, scenario, timeout_s=10.0, attempt_timeout_s=1.0)


def test_same_errors_when_node_refuses_or_stays_silent(plain: FakeNode, leaderless: FakeNode) -> None:
    """Error replies, silence and leaderless nodes raise the same classes in both clients."""
    @outcome(ForbiddenError)
    async def forbidden(c: AnyClient) -> object:
        plain.mode(error=["forbidden", "no", None])
        try:
            return await c.get("k")
        finally:
            plain.mode()

    @outcome(UnknownResultError)
    async def unknown(c: AnyClient) -> object:
        plain.mode(drop_replies=100)
        try:
            return await c.put("aio:unk", 1)
        finally:
            plain.mode()

    @outcome(NotFoundError)
    async def missing(c: AnyClient) -> object:
        return await c.get("aio:absent")

    @outcome(ConditionFailedError)
    async def cas(c: AnyClient) -> object:
        return await c.put_if("aio:absent", 1, condition=lambda v: False)

    for scenario in (forbidden, unknown, missing, cas):
        names = run_both(plain.endpoint, scenario, timeout_s=1.0, retries=3, attempt_timeout_s=0.2)
        assert names[0] == names[1], scenario

    @outcome(NoLeaderError)
    async def no_leader(c: AnyClient) -> object:
        return await c.get("k")

    assert ["NoLeaderError"] * 2 == run_both(leaderless.endpoint, no_leader, timeout_s=1.0, attempt_timeout_s=1.0)


def test_leader_hint_followed_when_aio_client_redirected(a: FakeNode, b: FakeNode) -> None:
    """The aio client follows not_leader hints and remembers the leader, as the sync one does."""
    async def scenario(c: AnyClient) -> object:
        await c.put("aio:lh", "v")
        value = await c.get("aio:lh")
        return c.inner.leader, value

    a.mode(redirect=b.endpoint)
    try:
        assert [(b.endpoint, "v")] * 2 == run_both(a.endpoint, scenario, timeout_s=10.0, attempt_timeout_s=3.0)
    finally:
        a.mode()


def test_replies_matched_and_writes_applied_once_when_128_coroutines_share_client(plain: FakeNode) -> None:
    """128 coroutines on one aio.Client, replies lost: each gets its own answer, each write applies once."""
    async def main() -> tuple[int, int, set[int]]:
        async with aio.Client(plain.endpoint, timeout_s=30.0, attempt_timeout_s=1.0) as c:
            plain.mode(drop_replies=16)

            async def work(n: int) -> None:
                for i in range(3):
                    await c.put(f"co:{n}:{i}", [n, i])
                    assert [n, i] == await c.get(f"co:{n}:{i}")

            before = len(plain.requests())
            await asyncio.gather(*(work(n) for n in range(128)))
            plain.mode()
            versions = {(await c.get(f"co:{n}:{i}", meta=True)).version for n in range(128) for i in range(3)}
            puts = [r for r in sent_since(plain, before) if r["op"] == "put"]
            return len(puts), len({(r["client_id"], r["seq"]) for r in puts}), versions

    sent, pairs, versions = asyncio.run(main())
    assert 128 * 3 == pairs
    assert sent > pairs
    assert {1} == versions


def test_calls_refused_when_aio_client_closed(plain: FakeNode) -> None:
    """After close() every call raises ShuttingDownError; close is idempotent."""
    async def main() -> None:
        c = aio.Client(plain.endpoint)
        await c.put("aio:c", 1)
        await c.close()
        await c.close()
        with pytest.raises(ShuttingDownError):
            await c.get("aio:c")

    asyncio.run(main())
