"""Fixtures of the fault suite: the real-process cluster factory."""

from tests.integration.conftest import cluster  # noqa: F401  (re-exported fixture)
