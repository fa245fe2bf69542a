"""Fixtures of the gateway tests: the integration `cluster` factory, HTTP on."""

from __future__ import annotations

from tests.integration.conftest import cluster  # noqa: F401  (the fixture, re-exported)
