"""The clients against a real single node (supervisor process tree)."""

from __future__ import annotations

import threading

import pytest

from concord.client import Client, Page
from concord.errors import NotFoundError
from tests.integration.conftest import ClusterFactory, cluster  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]


def test_index_methods_and_ttl_clearing_work_when_node_serves_them(cluster: ClusterFactory) -> None:  # noqa: F811
    """create_index/list_indexes/lookup/drop_index round-trip; touch(key, None) clears a ttl."""
    c = cluster(1)
    c.wait_leader()
    with Client(c.nodes[c.ids[0]].client, shm=False) as client:
        client.put("u:1", {"city": "Oslo"})
        client.put("u:2", {"city": "Rome"})
        assert True is client.create_index("by_city", "city")
        assert False is client.create_index("by_city", "city")
        assert [{"name": "by_city", "field": "city"}] == client.list_indexes()
        assert Page((("u:1", {"city": "Oslo"}),), False) == client.lookup("by_city", "Oslo")
        assert ["u:1", "u:2"] == [k for k, _ in client.lookup("by_city", range=("A", "Z")).items]
        assert True is client.drop_index("by_city")
        with pytest.raises(NotFoundError):
            client.lookup("by_city", "Oslo")
        client.put("t:1", 1, ttl=60)
        ttl = client.ttl("t:1")
        assert ttl is not None and 0 < ttl <= 60
        client.touch("t:1", None)
        assert None is client.ttl("t:1")
        assert 1 == client.get("t:1")


def test_threads_get_own_replies_and_writes_apply_once_when_sharing_client(
    cluster: ClusterFactory,  # noqa: F811
) -> None:
    """16 threads on one Client, mixed writes and reads: each reply is its request's; no write lost or doubled."""
    c = cluster(1)
    c.wait_leader()
    errors: list[BaseException] = []
    with Client(c.nodes[c.ids[0]].client, shm=False, timeout_s=30.0) as client:
        start = threading.Barrier(16)

        def work(n: int) -> None:
            try:
                start.wait(10.0)
                for i in range(25):
                    client.put(f"h:{n}:{i}", [n, i])
                    assert [n, i] == client.get(f"h:{n}:{i}", consistency="strong")
                    client.put_if(f"cnt:{n}", i + 1, version=i)  # version i: the i-th increment
                    assert {f"h:{n}:{i}": [n, i]} == client.get_many([f"h:{n}:{i}"])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(80.0)
        assert [] == errors
        assert 16 * 25 == client.count(prefix="h:", consistency="strong")
        for n in range(16):
            meta = client.get(f"cnt:{n}", meta=True)
            assert (25, 25) == (meta.value, meta.version)
        assert 1 == client.session_slots  # one client_id: min_seq keeps every in-flight result


def test_aio_subscription_yields_changes_in_order_when_iterated(cluster: ClusterFactory) -> None:  # noqa: F811
    """`async for` over aio.Client.subscribe yields every change of the prefix, in revision order."""
    import asyncio

    from concord import aio

    c = cluster(1)
    c.wait_leader()

    async def main() -> list[tuple[str, str, object]]:
        async with aio.Client(c.nodes[c.ids[0]].client, timeout_s=10.0) as client:
            first = await client.put("other", 0)
            async with client.subscribe("s:", since_revision=first) as sub:
                await asyncio.gather(*(client.put(f"s:{i}", i) for i in range(5)))
                await client.delete("s:0")
                seen: list[tuple[str, str, object]] = []
                revisions: list[int] = []
                async for event in sub:
                    seen.append((event.type, event.key, event.value))
                    revisions.append(event.revision)
                    if len(seen) == 6:
                        break
                assert sorted(revisions) == revisions and first < revisions[0]
                return seen

    seen = asyncio.run(main())
    assert sorted(("put", f"s:{i}", i) for i in range(5)) == sorted(seen[:5])
    assert ("delete", "s:0", None) == seen[5]
