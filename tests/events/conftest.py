"""The node's `cluster` factory fixture (tests/integration), for the events integration tests."""

from __future__ import annotations

from tests.integration.conftest import cluster

__all__ = ["cluster"]
