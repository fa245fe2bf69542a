"""Fixtures: fake nodes (front door process + fake KV backend process), shared per module."""

from __future__ import annotations

from typing import Iterator

import pytest
import zmq

from concord.client.raw import request
from tests.client.fakes import FakeNode
from tests.helpers import wait_until

Context = zmq.Context[zmq.Socket[bytes]]


def _serving(node: FakeNode) -> bool:
    reply = request(node.endpoint, {"op": "status", "timeout_ms": 200}, timeout_ms=500, retries=0)
    return reply.get("ok") is True


def _start(name: str, backend: bool = True) -> FakeNode:
    node = FakeNode(name, backend)
    if backend:
        try:
            wait_until(lambda: _serving(node), 20.0, describe=f"fake node {name} never served status")
        except BaseException:
            node.stop()
            raise
    return node


@pytest.fixture(scope="module")
def node_a() -> Iterator[FakeNode]:
    node = _start("a")
    yield node
    node.stop()


@pytest.fixture(scope="module")
def node_b() -> Iterator[FakeNode]:
    node = _start("b")
    yield node
    node.stop()


@pytest.fixture(scope="module")
def leaderless() -> Iterator[FakeNode]:
    """A front door with no backend: answers no_leader at once."""
    node = _start("c", backend=False)
    yield node
    node.stop()


@pytest.fixture
def a(node_a: FakeNode) -> FakeNode:
    """node_a with its behaviour reset to a plain KV."""
    node_a.mode()
    return node_a


@pytest.fixture
def b(node_b: FakeNode) -> FakeNode:
    """node_b with its behaviour reset to a plain KV."""
    node_b.mode()
    return node_b
