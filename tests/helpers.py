"""
Test helpers shared by every test module.

`wait_until` is the only place in tests/ allowed to call `time.sleep` (a lint test
enforces it): every other wait is on an event.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None],
    timeout_s: float,
    describe: Callable[[], str] | str = "",
    first_delay_s: float = 0.001,
    max_delay_s: float = 0.05,
) -> T:
    """
    Poll `predicate` with exponential backoff until it returns a truthy value.

    Returns:
        The truthy value (never None: a predicate returning `X | None` gives an `X`).

    Raises:
        AssertionError: on timeout, showing `describe` (the last observed state).
    """
    deadline = time.monotonic() + timeout_s
    delay = first_delay_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = describe() if callable(describe) else describe
            raise AssertionError(f"condition not met within {timeout_s}s: {text}")
        time.sleep(delay)
        delay = min(delay * 2, max_delay_s)
