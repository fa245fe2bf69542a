"""
Virtual time: an event heap ordered by (time, seq). Time jumps to the next event.

Pure. No wall clock anywhere: `now` is the time of the event being run.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["EventLoop", "Timer"]


@dataclass(order=True, slots=True)
class Timer:
    """A scheduled callback; `cancel()` makes it a no-op when its time comes."""

    time: int
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    """Runs callbacks in (time, seq) order; equal times run in scheduling order."""

    def __init__(self) -> None:
        self.now = 0
        self._seq = 0
        self._heap: list[Timer] = []
        self.events_run = 0

    def at(self, time: int, callback: Callable[[], None]) -> Timer:
        """Schedule `callback` at virtual time `time` (never in the past)."""
        self._seq += 1
        timer = Timer(max(time, self.now), self._seq, callback)
        heapq.heappush(self._heap, timer)
        return timer

    def after(self, delay: int, callback: Callable[[], None]) -> Timer:
        return self.at(self.now + max(0, delay), callback)

    def run_until(self, time: int, stop: Callable[[], bool] | None = None) -> None:
        """Run events up to and including `time` (or until `stop()` is true)."""
        heap = self._heap
        while heap and heap[0].time <= time:
            timer = heapq.heappop(heap)
            if timer.cancelled:
                continue
            self.now = timer.time
            self.events_run += 1
            timer.callback()
            if stop is not None and stop():
                return
        self.now = max(self.now, time)
