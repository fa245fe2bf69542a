"""RateLimitedLog: one line per key per interval, the held-back count on the next line."""

from __future__ import annotations

from concord.net.ratelog import RateLimitedLog
from tests.net.netutil import FakeClock


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, msg: str, *args: object) -> None:
        self.lines.append(msg % args)


def test_warning_is_held_back_when_key_logged_within_interval() -> None:
    """Within the interval a key's lines are counted; the next line reports the count."""
    out, clock = _Lines(), FakeClock()
    log = RateLimitedLog(out, interval_s=10.0, clock=clock)
    assert log.warning("a", "dropped n=%d", 1)
    assert not log.warning("a", "dropped n=%d", 2)
    assert not log.warning("a", "dropped n=%d", 3)
    assert log.warning("b", "other")  # keys are independent
    clock.advance(10.0)
    assert log.warning("a", "dropped n=%d", 4)
    assert ["dropped n=1 suppressed=0", "other suppressed=0", "dropped n=4 suppressed=2"] == out.lines
