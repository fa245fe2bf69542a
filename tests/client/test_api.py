"""The module-level API (concord.client.api) over a default client."""

from __future__ import annotations

from typing import Iterator

import pytest

from concord.client import Client, api
from concord.client.results import BulkDeleteResult, DeleteResult, KeysPage, Page, ValueWithTTL
from concord.errors import NotFoundError, ShuttingDownError
from tests.client.fakes import FakeNode

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.fixture
def connected(a: FakeNode) -> Iterator[Client]:
    client = api.connect(a.endpoint, timeout_s=3.0, shm=False)
    yield client
    api.disconnect()


def test_functions_delegate_to_default_client_when_connected(connected: Client, a: FakeNode) -> None:
    """Every module function reaches the default client's node with the same op."""
    a.mode(probe=True)  # `status` recorded like the others (tests/client/fakes.py)
    before = len(a.requests())
    rev = api.put("api:a", 1, ttl=10)
    assert 1 == api.get("api:a")
    assert "d" == api.get("api:none", default="d")
    with pytest.raises(NotFoundError):
        api.get("api:none")
    assert rev == api.get("api:a", meta=True).revision
    api.put_many([("api:b", 2), ("api:c", 3)])
    assert {"api:b": 2} == api.get_many(["api:b"])
    api.touch("api:b", 5)
    api.touch_many([("api:c", 6)])
    assert 5.0 == api.ttl("api:b")
    assert ValueWithTTL(3, 6.0) == api.get_with_ttl("api:c")
    assert isinstance(api.get_all(limit=2), Page)
    api.put_if("api:d", 4, absent=True)
    api.put_if("api:d", 5, expected=4)
    api.put_if("api:d", 6, condition=lambda cur: cur == 5)
    assert isinstance(api.delete_if("api:d", expected=6), DeleteResult)
    assert KeysPage(("api:a", "api:b", "api:c"), False) == api.keys(prefix="api:")
    assert 3 == api.count(prefix="api:")
    assert 3 == len(api.query(prefix="api:").items)
    assert isinstance(api.delete("api:a"), DeleteResult)
    assert BulkDeleteResult(1, api.delete_many(["api:b"]).revision + 1) == api.delete_where(prefix="api:")
    assert api.events(0, prefix="api:").events
    assert "a" == api.status()["node"]
    assert api.members()
    api.add_member("n9", "127.0.0.1", 1, 2, 3)
    api.promote_member("n9")
    api.remove_member("n9")
    api.transfer_leader()
    ops = [r["op"] for r in a.requests()[before:]]
    assert set(api.__all__) - {"connect", "disconnect", "default_client"} <= set(ops)
    assert connected is api.default_client()


def test_functions_raise_when_not_connected() -> None:
    """Without connect (or after disconnect) the functions raise ShuttingDownError."""
    api.disconnect()
    with pytest.raises(ShuttingDownError):
        api.get("k")


def test_previous_client_closed_when_connect_called_again(a: FakeNode) -> None:
    """connect replaces the default client and closes the old one."""
    first = api.connect(a.endpoint, shm=False)
    second = api.connect(a.endpoint, shm=False)
    try:
        with pytest.raises(ShuttingDownError):
            first.get("k")
        assert second is api.default_client()
    finally:
        api.disconnect()
