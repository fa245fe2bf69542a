"""Shared fixtures of the kv tests."""

from __future__ import annotations

import pytest

from concord.kv import KvStateMachine


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis' failure report imports a deprecated name; keep the report readable."""
    config.addinivalue_line("filterwarnings", "ignore:mypy_extensions.TypedDict:DeprecationWarning")


@pytest.fixture
def sm() -> KvStateMachine:
    """A fresh state machine with the default config."""
    return KvStateMachine()
