"""A reset built in steps (Publisher.begin_reset / reset_step): invisible until published."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from concord.kv.record import KeyRecord, Space
from concord.shm import bulkreset
from concord.shm.layout import SegmentNames
from concord.shm.publisher import Publisher
from concord.shm.segments import store_segments
from concord.shm.view import MISSING, NodeView, ShmView

from .helpers import put, rec


@pytest.fixture
def pub(store: SegmentNames) -> Iterator[Publisher]:
    p = Publisher.attach(store)
    yield p
    p.close()


@pytest.fixture(params=[ShmView, NodeView], ids=["client_view", "node_view"])
def view(request: pytest.FixtureRequest, store: SegmentNames, pub: Publisher) -> Iterator[ShmView]:
    kind: type[ShmView] = request.param
    v = kind.attach(store)
    yield v
    v.close()


def _records(n: int, value: str = "v") -> list[KeyRecord]:
    return [rec(f"k{i:05}", f"{value}{i}", 10, expires_at_ms=5_000 if i % 7 == 0 else 0)
            for i in range(n)]


def test_readers_see_the_state_before_when_a_reset_is_being_built(
    pub: Publisher, view: ShmView, store: SegmentNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Until its last step a reset in steps changes nothing readers see (status, values,
    generation); the step that publishes it switches them to exactly the new state.
    """
    monkeypatch.setattr(bulkreset, "STEP_RECORDS", 16)
    pub.publish([put("old", 1, 1)], 1, 1, 0)
    assert 1 == view.get_value("old")
    records = _records(100)
    pub.begin_reset([(Space.USER, iter(records)), (Space.SYSTEM, [rec("s", 3, 10)])], 10, 10, 77)
    del records[:]  # taken by begin_reset: the caller may change its own state now
    steps = 0
    while not pub.reset_step(0.0):  # one step per call
        steps += 1
        assert pub.resetting
        assert (1, 1) == (view.status().applied_index, view.get_value("old"))
        assert MISSING is view.get_value("k00001")
    assert steps >= 100 // 16 * 2  # laid out, then written, 16 records a step
    assert not pub.resetting
    assert 10 == view.status().applied_index
    assert MISSING is view.get_value("old")
    assert ["v0", "v1", "v99"] == view.get_many_values(["k00000", "k00001", "k00099"])
    assert rec("k00007", "v7", 10, expires_at_ms=5_000) == view.record("k00007")
    assert rec("s", 3, 10) == view.record("s", Space.SYSTEM)
    assert 2 == len(store_segments(store))  # the control segment and the new generation
    pub.publish([put("k00001", "after", 11)], 11, 11, 78)  # publishes resume on top of it
    assert "after" == view.get_value("k00001")


def test_stepped_reset_publishes_what_reset_does_when_given_the_same_records(
    store: SegmentNames, pub: Publisher, view: ShmView, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every record, TTL and directory entry of a reset in small steps equals reset()'s."""
    records = _records(300)
    pub.reset([(Space.USER, records)], 10, 10, 0)
    view.sync()
    whole = {key: view.record(key) for key in view.keys()}
    monkeypatch.setattr(bulkreset, "STEP_RECORDS", 7)
    pub.begin_reset([(Space.USER, records)], 12, 12, 0)
    while not pub.reset_step(0.0):
        pass
    view.sync()
    assert 12 == view.status().applied_index
    assert whole == {key: view.record(key) for key in view.keys()}
    assert 300 == len(whole) == pub.stats().live_records


def test_abandoned_reset_leaves_no_segment_when_aborted_or_replaced(
    store: SegmentNames, pub: Publisher, view: ShmView, monkeypatch: pytest.MonkeyPatch
) -> None:
    """abort_reset (and a new begin_reset) unlink the unpublished generation; nothing changes."""
    monkeypatch.setattr(bulkreset, "STEP_RECORDS", 8)
    pub.publish([put("old", 1, 1)], 1, 1, 0)
    pub.begin_reset([(Space.USER, _records(40))], 5, 5, 0)
    while 3 > len(store_segments(store)):  # until its generation exists
        assert not pub.reset_step(0.0)
    pub.begin_reset([(Space.USER, _records(40, "w"))], 6, 6, 0)  # replaces it
    assert 2 == len(store_segments(store))
    pub.reset_step(float("inf"))
    assert (6, "w3") == (view.status().applied_index, view.get_value("k00003"))
    pub.begin_reset([(Space.USER, _records(40, "x"))], 7, 7, 0)
    pub.reset_step(0.0)
    pub.abort_reset()
    assert not pub.resetting
    assert (6, "w3") == (view.status().applied_index, view.get_value("k00003"))
    assert 2 == len(store_segments(store))


def test_publish_raises_when_a_reset_is_being_built(pub: Publisher, view: ShmView) -> None:
    """A publish in the middle would be lost under the reset: refused, nothing changes."""
    pub.begin_reset([(Space.USER, _records(3))], 5, 5, 0)
    with pytest.raises(RuntimeError):
        pub.publish([put("a", 1, 6)], 6, 6, 0)
    pub.reset_step(float("inf"))
    assert (5, MISSING) == (view.status().applied_index, view.get_value("a"))
