"""Fixtures of the audit tests."""

from tests.integration.conftest import cluster  # noqa: F401  (the cluster fixture)
