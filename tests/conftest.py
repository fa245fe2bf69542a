"""Fixtures shared by every test package."""

from __future__ import annotations

from typing import Iterator

import pytest
import zmq

Context = zmq.Context[zmq.Socket[bytes]]


@pytest.fixture
def ctx() -> Iterator[Context]:
    """A ZeroMQ context of the test's own, terminated after it."""
    context: Context = zmq.Context()
    yield context
    context.term()
