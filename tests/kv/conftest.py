"""Shared fixtures of the kv tests; hypothesis runs derandomized when CI is set."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from concord.kv import KvStateMachine

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis' failure report imports a deprecated name; keep the report readable."""
    config.addinivalue_line("filterwarnings", "ignore:mypy_extensions.TypedDict:DeprecationWarning")


@pytest.fixture
def sm() -> KvStateMachine:
    """A fresh state machine with the default config."""
    return KvStateMachine()
settings.register_profile("thorough", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
if os.environ.get("KV_HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["KV_HYPOTHESIS_PROFILE"])
