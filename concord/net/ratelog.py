"""
Rate-limited warnings for input that anyone can send (hostile or broken peers, clients).

A node must log what it drops, but a flood of bad frames must not become a flood of log
lines: `RateLimitedLog.warning(key, ...)` writes at most one line per `key` per
`interval_s` and counts the calls it held back, reporting them as `suppressed=N` on the
next line it writes for that key. Keys are a fixed set of reasons chosen by the caller,
never taken from input (the tables would grow with it). Pure bookkeeping: no IO besides
the logger, no threads.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

__all__ = ["RateLimitedLog", "WarningLogger"]


class WarningLogger(Protocol):
    """What we need of a `logging.Logger` or `LoggerAdapter`."""

    def warning(self, msg: str, *args: object) -> None: ...


class RateLimitedLog:
    """
    At most one warning per key per `interval_s`; the rest are counted.

    Args:
        logger: where lines go (a Logger or a LoggerAdapter carrying node, term, role).
        interval_s: the minimum time between two lines of one key.
        clock: monotonic seconds; injected for tests.
    """

    def __init__(self, logger: WarningLogger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """
        Log `msg % args` plus ` suppressed=N` unless `key` logged within the interval.

        Returns:
            True if a line was written, False if it was counted as suppressed.
        """
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        self._logger.warning(msg + " suppressed=%d", *args, self._suppressed.pop(key, 0))
        return True
