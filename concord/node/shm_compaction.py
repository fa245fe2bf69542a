"""
When the raft worker compacts its shared-memory arena (concord.shm.publisher).

Dead records (overwritten or deleted values) accumulate in the arena; once they pass
`RATIO` of it, the publisher compacts: readers rebuild their index from the new
directory after the switch. The worker looks at most every `INTERVAL_S` (and that long
after the last switch: readers rebuild after each one, and two switches closer than a
rebuild would make them start over). A compaction runs incrementally, one step of
`STEP_S` per loop turn; the loop does not sleep in poll while one runs
(`Publisher.compacting`).
"""

from __future__ import annotations

import logging

from concord.shm.publisher import Publisher

__all__ = ["INTERVAL_S", "RATIO", "STEP_S", "ShmCompaction"]

INTERVAL_S = 5.0
RATIO = 0.5
STEP_S = 0.005


class ShmCompaction:
    """Paces the compactions of one publisher's arena on the worker's monotonic clock."""

    def __init__(self, publisher: Publisher,
                 log: logging.Logger | logging.LoggerAdapter[logging.Logger], now: float) -> None:
        self._publisher = publisher
        self._log = log
        self._next = now + INTERVAL_S

    def step(self, now: float) -> None:
        """Start a compaction when due, or advance the one running by one step."""
        publisher = self._publisher
        if not publisher.compacting:
            if now < self._next:
                return
            self._next = now + INTERVAL_S
            publisher.maybe_begin_compaction(min_dead_ratio=RATIO)
        elif publisher.compact_step(STEP_S):
            self._next = now + INTERVAL_S
            stats = publisher.stats()
            self._log.info("shm compacted used_bytes=%d generation=%d", stats.used_bytes,
                           stats.generation)
