"""The raft worker's read barriers: one strong driver read each, answered only once shared memory holds the index."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

from concord.net.backend import BarrierError, unpack_barrier_answer
from concord.node.driver import Consistency, Reply, ReplyStatus
from concord.node.worker_barriers import Barriers


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[tuple[int, object]] = []

    def answer_barrier(self, token: int, payload: bytes) -> bool:
        self.sent.append((token, unpack_barrier_answer(payload)))
        return True


class FakeDriver:
    def __init__(self) -> None:
        self.reads: list[tuple[int, str, Consistency]] = []

    def submit_read(self, rid: int, key: str, consistency: Consistency) -> None:
        self.reads.append((rid, key, consistency))


def test_barrier_answer_waits_for_shared_memory_when_the_read_index_is_applied_first() -> None:
    """Applied at 7 but published at 6: no answer; published at 7: {"index": 7}."""
    driver = FakeDriver()
    worker = SimpleNamespace(ids=itertools.count(1), driver=driver)
    barriers = Barriers()
    barriers.take(worker, token=40)  # type: ignore[arg-type]
    [(rid, _, consistency)] = driver.reads
    assert Consistency.STRONG is consistency
    assert not barriers.on_reply(worker, Reply(rid + 1, ReplyStatus.OK, index=7))  # type: ignore[arg-type]
    assert barriers.on_reply(worker, Reply(rid, ReplyStatus.OK, index=7))  # type: ignore[arg-type]
    link = FakeLink()
    barriers.send(link, published_index=6)  # type: ignore[arg-type]
    assert [] == link.sent and 1 == len(barriers)
    barriers.send(link, published_index=7)  # type: ignore[arg-type]
    assert [(40, 7)] == link.sent and 0 == len(barriers)


def test_barrier_error_is_answered_at_once_when_the_read_times_out() -> None:
    """A timed-out read index: the strong read's timeout error, without waiting for a publish."""
    driver = FakeDriver()
    worker = SimpleNamespace(ids=itertools.count(1), driver=driver)
    barriers = Barriers()
    barriers.take(worker, token=41)  # type: ignore[arg-type]
    barriers.on_reply(worker, Reply(driver.reads[0][0], ReplyStatus.TIMEOUT))  # type: ignore[arg-type]
    link = FakeLink()
    barriers.send(link, published_index=0)  # type: ignore[arg-type]
    assert [(41, BarrierError("timeout", "the read could not be confirmed in time", None))] == link.sent
