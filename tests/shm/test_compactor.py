"""Incremental compaction: bounded steps while publishes, deletes, TTL changes and growth go on."""

from __future__ import annotations

import mmap
import random
from collections.abc import Iterator

import msgpack
import pytest

from concord.kv.record import Change, ChangeType, KeyRecord, Space
from concord.shm.compactor import FINISH_DIRTY_MAX, Phase, Releaser
from concord.shm.layout import SegmentNames, read_gen_directory
from concord.shm.publisher import Publisher
from concord.shm.segments import create_store, store_segments
from concord.shm.view import NodeView, ShmView

from .helpers import delete, put

Model = dict[tuple[Space, str], KeyRecord]


@pytest.fixture
def big_ring(names: SegmentNames) -> SegmentNames:
    """A store with a 1,024-slot ring (a delta of up to 512 keys) and a 4 KiB g0."""
    create_store(names, ring_capacity=1024, initial_bytes=4096)
    return names


@pytest.fixture
def pub(big_ring: SegmentNames) -> Iterator[Publisher]:
    p = Publisher.attach(big_ring)
    yield p
    p.close()


#: The view class `_view` attaches (every test runs with a client's view and a node's).
_VIEW_KIND: list[type[ShmView]] = [ShmView]


@pytest.fixture(autouse=True, params=[ShmView, NodeView], ids=["client_view", "node_view"])
def view_kind(request: pytest.FixtureRequest) -> Iterator[None]:
    _VIEW_KIND[0] = request.param
    yield
    _VIEW_KIND[0] = ShmView


def _view(names: SegmentNames) -> ShmView:
    return _VIEW_KIND[0].attach(names, mono_ns=lambda: 0)


def _state(view: ShmView) -> Model:
    """Everything a view holds, as records (nothing is expired at leader time 0)."""
    view.sync()
    out: Model = {}
    for space in Space:
        for key in view.keys(space):
            got = view.record(key, space)
            assert got is not None, key
            out[space, key] = got
    return out


class Writer:
    """A publisher plus the model of what it published."""

    def __init__(self, pub: Publisher, rng: random.Random) -> None:
        self.pub = pub
        self.rng = rng
        self.model: Model = {}
        self.rev = 0

    def record(self, space: Space, key: str, value: object, expires_at_ms: int) -> KeyRecord:
        old = self.model.get((space, key))
        version = 1 if old is None else old.version + 1
        create = self.rev if old is None else old.create_revision
        return KeyRecord(key, msgpack.packb(value), 0, create, self.rev, version, expires_at_ms)

    def publish(self, changes: list[Change]) -> None:
        for ch in changes:
            if ch.record is None:
                self.model.pop((ch.space, ch.key), None)
            else:
                self.model[ch.space, ch.key] = ch.record
        self.pub.publish(changes, self.rev, self.rev, 0)

    def random_batch(self, n_keys: int, value_bytes: int = 20) -> None:
        """Puts, TTL puts, touches, deletes and expiries, over both keyspaces."""
        rng = self.rng
        self.rev += 1
        changes: list[Change] = []
        seen: set[tuple[Space, str]] = set()
        for _ in range(rng.randrange(1, 6)):
            space = Space.SYSTEM if rng.random() < 0.1 else Space.USER
            key = f"k{rng.randrange(n_keys)}"
            if (space, key) in seen:
                continue
            seen.add((space, key))
            r = rng.random()
            old = self.model.get((space, key))
            if r < 0.45:
                rec = self.record(space, key, "v" * rng.randrange(value_bytes), 0)
                changes.append(Change(ChangeType.PUT, space, key, rec, self.rev, 0))
            elif r < 0.6:
                rec = self.record(space, key, self.rev, 10_000 + rng.randrange(100))
                changes.append(Change(ChangeType.PUT, space, key, rec, self.rev, 0))
            elif r < 0.75 and old is not None:
                # A touch: same value, new (or no) TTL.
                rec = KeyRecord(key, old.value, old.flags, old.create_revision, self.rev,
                                old.version, rng.choice([0, 20_000]))
                changes.append(Change(ChangeType.TOUCH, space, key, rec, self.rev, 0))
            elif r < 0.9:
                changes.append(Change(ChangeType.DELETE, space, key, None, self.rev, 0))
            else:
                changes.append(Change(ChangeType.EXPIRE, space, key, None, self.rev, 0))
        self.publish(changes)

    def fill(self, n_keys: int, value_bytes: int = 20) -> None:
        """Put every key once, then overwrite half (dead records to compact away)."""
        for i in list(range(n_keys)) + list(range(0, n_keys, 2)):
            self.rev += 1
            key = f"k{i}"
            rec = self.record(Space.USER, key, "x" * value_bytes, 0)
            self.publish([Change(ChangeType.PUT, Space.USER, key, rec, self.rev, 0)])


@pytest.mark.slow
def test_compaction_keeps_state_when_publishes_interleave_with_steps(
    big_ring: SegmentNames, pub: Publisher
) -> None:
    """Random publishes between single-chunk steps: every view always equals the model."""
    rng = random.Random(7)
    w = Writer(pub, rng)
    w.fill(1500)
    view = _view(big_ring)
    finished = 0
    for _ in range(3):
        pub.begin_compaction()
        assert pub.compacting
        lineage = view.status().lineage_gen
        steps = 0
        switched = False
        while pub.compacting:  # until the old generation and maps are freed too
            w.random_batch(1500)
            switched |= pub.compact_step(0.0)
            steps += 1
            if not switched:
                assert lineage == view.status().lineage_gen  # nothing visible yet
            assert w.model == _state(view)
        finished += switched
        assert steps > 10  # it really ran in many steps
    assert 3 == finished
    late = _view(big_ring)  # a fresh view of the last compaction's directory (+ delta)
    try:
        assert w.model == _state(late)
        assert 1 == late.directory_loads
    finally:
        late.close()
    assert view.directory_loads >= 3
    assert 0 == view.retries
    view.close()


def test_delta_of_changed_keys_is_replayed_when_directory_loaded(
    big_ring: SegmentNames, pub: Publisher
) -> None:
    """Keys put, re-put with a TTL, touched and deleted mid-compaction reach the new lineage."""
    w = Writer(pub, random.Random(1))
    w.fill(600)
    pub.begin_compaction()
    pub.compact_step(0.0)  # a copy of the keyspace's key -> offset map
    pub.compact_step(0.0)  # its first chunk copied
    w.rev += 1
    w.publish([
        put("k0", "new", w.rev),  # copied already: folded, superseded copy marked dead
        put("k599", "ttl", w.rev, expires_at_ms=50_000),  # not copied yet: skipped, folded
        delete("k1", w.rev),  # copied: a DELETE in the delta
        delete("k598", w.rev),  # not copied yet
        put("fresh", 1, w.rev),  # created meanwhile
    ])
    w.publish([put("gone", 1, w.rev)])
    w.publish([delete("gone", w.rev)])  # created and deleted meanwhile: nothing to replay
    while not pub.compact_step(0.0):
        pass
    view = _view(big_ring)
    try:
        assert w.model == _state(view)
        assert 1 == view.directory_loads
        status = view.status()
        _, dir_head = read_gen_directory(view._mm)
        # PUT k0, k599, fresh; DELETE k1 (k598 and gone were never in the directory).
        assert 4 == status.ring_head - dir_head
        assert status.ring_head == status.prev_head  # no dead marks pending
    finally:
        view.close()


def test_scan_sees_one_live_record_per_key_when_compacted_with_delta(
    big_ring: SegmentNames, pub: Publisher
) -> None:
    """A view that scans the new generation, and a restarted writer, find the model."""
    rng = random.Random(3)
    w = Writer(pub, rng)
    w.fill(1000)
    pub.begin_compaction()
    while pub.compacting:
        w.random_batch(1000)
        pub.compact_step(0.0)
    for _ in range(1100):  # more than a ring past the directory: new views scan
        w.random_batch(50)
    view = _view(big_ring)
    try:
        assert w.model == _state(view)
        assert 0 == view.directory_loads
    finally:
        view.close()
    pub.close()
    again = Publisher.attach(big_ring)
    try:
        assert len(w.model) == again.stats().live_records
        assert pub.stats().live_bytes == again.stats().live_bytes
        w.pub = again
        w.random_batch(1000)
        again.compact()
        view = _view(big_ring)
        assert w.model == _state(view)
        view.close()
    finally:
        again.close()


@pytest.mark.slow
def test_compaction_survives_growth_of_both_generations_when_values_grow_meanwhile(
    big_ring: SegmentNames, pub: Publisher
) -> None:
    """Big values published mid-compaction grow the live generation and the target."""
    w = Writer(pub, random.Random(5))
    w.fill(400)
    view = _view(big_ring)
    pub.begin_compaction()
    assert pub._compaction is not None
    target_cap = len(pub._compaction.mm)
    pub.compact_step(0.0)
    capacity = pub.stats().capacity_bytes
    for i in range(300):
        w.rev += 1
        key = f"k{i}"
        w.publish([Change(ChangeType.PUT, Space.USER, key,
                          w.record(Space.USER, key, "B" * 4000, 0), w.rev, 0)])
        assert w.model == _state(view)
    assert capacity < pub.stats().capacity_bytes  # the live generation grew meanwhile
    while not pub.compact_step(0.0):
        assert w.model == _state(view)
    assert w.model == _state(view)
    stats = pub.stats()
    assert stats.capacity_bytes > 300 * 4000 > target_cap  # the target grew in place
    assert stats.capacity_bytes >= stats.used_bytes
    assert stats.lineage_gen == stats.generation
    view.close()


def test_compaction_restarts_when_delta_outgrows_the_ring(names: SegmentNames) -> None:
    """More changed keys than half the ring: start over rather than make readers scan."""
    create_store(names, ring_capacity=64, initial_bytes=4096)
    pub = Publisher.attach(names)
    try:
        w = Writer(pub, random.Random(9))
        w.fill(300)
        pub.begin_compaction()
        first = pub._compaction
        assert first is not None
        for i in range(40):  # 40 distinct keys: a delta of 40 > 32
            w.rev += 1
            w.publish([put(f"k{i}", "changed", w.rev)])
        for _ in range(100):
            assert not pub.compact_step(0.0)  # the first attempt never switches
            if pub._compaction is not first:
                break
        assert Phase.DONE is first.phase
        assert pub.compacting  # a new attempt
        while not pub.compact_step(0.0):
            pass
        view = _view(names)
        assert w.model == _state(view)
        view.close()
    finally:
        pub.close()


def test_finish_waits_when_many_keys_are_dirty(names: SegmentNames) -> None:
    """A step folds dirty keys in chunks; the switch comes once few are left."""
    create_store(names, ring_capacity=1 << 14, initial_bytes=4096)
    pub = Publisher.attach(names)
    try:
        w = Writer(pub, random.Random(11))
        w.fill(3000, value_bytes=4)
        pub.begin_compaction()
        c = pub._compaction
        assert c is not None
        while c.phase is not Phase.FOLD:
            pub.compact_step(0.0)
        w.rev += 1
        w.publish([put(f"k{i}", "y", w.rev) for i in range(FINISH_DIRTY_MAX + 300)])
        assert not c.ready()
        assert not pub.compact_step(0.0)  # folds one chunk; still too many dirty
        assert not pub.compact_step(0.0)  # another: now few enough
        assert c.ready()
        assert pub.compact_step(0.0)  # the switch, in a call of its own
        view = _view(names)
        assert w.model == _state(view)
        view.close()
    finally:
        pub.close()


def test_close_unlinks_target_when_compaction_unfinished(
    big_ring: SegmentNames, pub: Publisher
) -> None:
    """An unfinished compaction's segment goes with the writer; the store stays intact."""
    w = Writer(pub, random.Random(2))
    w.fill(1000)
    pub.begin_compaction()
    pub.compact_step(0.0)
    target = pub._compaction
    assert target is not None
    assert big_ring.gen(target.generation) in store_segments(big_ring)
    pub.close()
    assert big_ring.gen(target.generation) not in store_segments(big_ring)
    view = _view(big_ring)
    assert w.model == _state(view)
    view.close()
    Publisher.attach(big_ring).close()


def test_reset_abandons_compaction_when_called_mid_way(
    big_ring: SegmentNames, pub: Publisher
) -> None:
    """A reset (snapshot install) replaces the state; the half-built generation is dropped."""
    w = Writer(pub, random.Random(4))
    w.fill(1000)
    pub.begin_compaction()
    pub.compact_step(0.0)
    pub.reset([(Space.USER, [w.record(Space.USER, "only", 1, 0)])], 9, 9, 0)
    assert not pub.compacting
    view = _view(big_ring)
    assert ["only"] == view.keys()
    view.close()
    assert 2 == len(store_segments(big_ring))  # ctl and the live generation


def test_maybe_begin_compaction_acts_when_mostly_dead(pub: Publisher) -> None:
    """Starting needs the dead ratio; a running compaction is not started twice."""
    w = Writer(pub, random.Random(6))
    w.fill(100)
    assert not pub.maybe_begin_compaction(min_dead_ratio=0.5, min_used_bytes=0)
    for i in range(100):
        w.rev += 1
        w.publish([put(f"k{i}", "again", w.rev)])
    assert pub.maybe_begin_compaction(min_dead_ratio=0.5, min_used_bytes=0)
    assert not pub.maybe_begin_compaction(min_dead_ratio=0.0, min_used_bytes=0)
    pub.compact()
    assert not pub.compacting
    assert pub.dead_ratio() < 0.01


def test_releaser_frees_in_chunks_when_stepped() -> None:
    """Dicts, lists and mappings go one bounded chunk per step, in the order handed over."""
    r = Releaser()
    d = {str(i): i for i in range(3 * Releaser.ITEMS)}
    keys: list[str] = [str(i) for i in range(2 * Releaser.ITEMS)]
    m = mmap.mmap(-1, 3 * Releaser.BYTES)  # anonymous, never touched
    r.add(d)
    r.add(keys)
    r.add(m)
    r.step(0.0)  # the deadline has passed: one chunk
    assert r.pending and 2 * Releaser.ITEMS == len(d)
    steps = 1
    while r.pending:
        r.step(0.0)
        steps += 1
    assert 3 + 2 + 3 == steps
    r.release_all()  # joins the thread that closed the mapping
    assert m.closed and not d and [None] * len(keys) == keys


def test_compacting_until_old_generation_released_when_switched(
    big_ring: SegmentNames, pub: Publisher
) -> None:
    """After the switch, steps free what it replaced; then the publisher is idle."""
    w = Writer(pub, random.Random(8))
    w.fill(1000)
    pub.begin_compaction()
    while not pub.compact_step(0.0):
        pass
    assert pub.compacting  # the old key maps and mapping are still being freed
    while pub.compacting:
        pub.compact_step(0.0)
    assert not pub.compact_step(0.0)
    assert 2 == len(store_segments(big_ring))  # the old generation is unlinked
    assert pub.last_compaction is not None and pub.last_compaction[0] > 1
